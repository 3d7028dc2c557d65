"""The one place that assembles the Dagster `Definitions`; resources are picked here from settings.

`TM2_MODE=local` (default): the embedded SecantusDB store and the in-process OpenMRS sandbox unless
MONGODB_URI / OPENMRS_BASE_URL are set. `TM2_MODE=production`: both must be set (checked by
`Settings`), and secrets reach the resources as `dg.EnvVar`, so the UI shows names, never values.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from tm2_pipeline.io_manager import Tm2TableIOManager
from tm2_pipeline.jobs import TM2_ASSETS, ingest_tm2_file, openmrs_retry
from tm2_pipeline.pipeline_config import PipelineConfig
from tm2_pipeline.resources.mongo import MongoResource
from tm2_pipeline.resources.openmrs import OpenMRSResource
from tm2_pipeline.schedules import build_nightly_retry_schedule
from tm2_pipeline.sensors import build_landing_sensor
from tm2_pipeline.settings import SANDBOX_PASSWORD, SANDBOX_USERNAME, Settings, load_settings


def build_resources(settings: Settings) -> dict[str, Any]:
    home = str(settings.home_dir)
    mongo = MongoResource(
        uri=dg.EnvVar("MONGODB_URI") if settings.mongodb_uri else None,
        tm2_home=home,
        database_name=settings.mongodb_database,
        write_concern=settings.mongo_write_concern,
        batch_size=settings.mongo_batch,
    )
    if settings.uses_sandbox:
        credentials = {"username": SANDBOX_USERNAME, "password": SANDBOX_PASSWORD}
    else:
        credentials = {"username": dg.EnvVar("OPENMRS_USERNAME"), "password": dg.EnvVar("OPENMRS_PASSWORD")}
    openmrs = OpenMRSResource(
        base_url=settings.openmrs_base_url,
        tm2_home=home,
        concurrency=settings.openmrs_concurrency,
        connect_timeout_s=settings.openmrs_connect_timeout_s,
        read_timeout_s=settings.openmrs_read_timeout_s,
        page_limit=settings.openmrs_page_limit,
        api=settings.openmrs_api,
        concept_source=settings.openmrs_concept_source,
        allow_noncoded=settings.openmrs_allow_noncoded,
        allow_insecure=settings.openmrs_allow_insecure,
        ca_bundle=str(settings.openmrs_ca_bundle) if settings.openmrs_ca_bundle else None,
        patient_retry_days=settings.patient_retry_days,
        **credentials,
    )
    pipeline = PipelineConfig(
        tm2_home=home,
        landing_dir=str(settings.landing_dir),
        timezone=settings.timezone,
        day_first=settings.day_first,
        reject_warn=settings.reject_warn,
        reject_block=settings.reject_block,
        submission_warn=settings.submission_warn,
    )
    return {
        "mongo": mongo,
        "openmrs": openmrs,
        "pipeline": pipeline,
        "tm2_table_io_manager": Tm2TableIOManager(tm2_home=home),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=TM2_ASSETS,
        jobs=[ingest_tm2_file, openmrs_retry],
        sensors=[build_landing_sensor(settings.sensor_interval_s, settings.sensor_max_runs)],
        schedules=[build_nightly_retry_schedule(settings.timezone)],
        resources=build_resources(settings),
        # JSON lines carry the run id and step of every message (TM2_LOG_JSON=true).
        loggers={"console": dg.json_console_logger} if settings.log_json else None,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings())
