"""Jobs: the per-file ingestion (four assets and their checks) and the nightly OpenMRS retry."""

from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from tm2_pipeline.abandoned_runs import tag_run_worker
from tm2_pipeline.assets.raw import raw_tm2_file
from tm2_pipeline.assets.stored import tm2_mongo_records
from tm2_pipeline.assets.submitted import openmrs_submissions, summary_metadata
from tm2_pipeline.assets.validated import validated_tm2_records
from tm2_pipeline.openmrs.states import RELEASABLE_STATES, SubmissionSummary
from tm2_pipeline.pipeline_config import PipelineConfig
from tm2_pipeline.resources.mongo import MongoResource
from tm2_pipeline.resources.openmrs import OpenMRSResource
from tm2_pipeline.submission_run import finish_abandoned_runs, submit_stored_records

TM2_ASSETS = [raw_tm2_file, validated_tm2_records, tm2_mongo_records, openmrs_submissions]

ingest_tm2_file = dg.define_asset_job(
    "ingest_tm2_file",
    selection=dg.AssetSelection.assets(*TM2_ASSETS),
    description="One landed file through raw -> validated -> MongoDB -> OpenMRS, checks included.",
)


RELEASED = "released"
RELEASE_MESSAGE = "sent again at a person's request (the cause was fixed in OpenMRS)"


class RetryConfig(dg.Config):
    release: bool = Field(
        default=False,
        description="Also send again the records waiting for a person (ambiguous patient, rejected by "
        "OpenMRS) or whose patient retry window ended: after merging a patient, mapping a concept or "
        "granting a privilege. Each is looked up in OpenMRS first.",
    )


@dg.op(
    description="Retry every submission still in a retryable state, across all files; send the "
    "records a run whose process died stored but never sent."
)
def retry_openmrs_submissions(
    context: dg.OpExecutionContext,
    config: RetryConfig,
    pipeline: PipelineConfig,
    mongo: MongoResource,
    openmrs: OpenMRSResource,
) -> None:
    tag_run_worker(context.instance, context.run)  # a re-execution of a `tm2 retry` run in the daemon
    now = datetime.now(UTC)
    if config.release:
        released = mongo.submissions().release(RELEASABLE_STATES, RELEASE_MESSAGE, now)
        # Told at once: the retry below may fail, and the released records then wait for the next.
        context.log_event(dg.AssetObservation(asset_key="openmrs_submissions", metadata={RELEASED: released}))
        context.log.info(f"released {released} records waiting for a person")
    keys = mongo.submissions().retryable_keys(now, openmrs.patient_retry_days)
    summary = submit_stored_records(keys, mongo=mongo, openmrs=openmrs, now=now)
    _report(context, summary, "retried")
    left = finish_abandoned_runs(
        context.instance,
        home=pipeline.home,
        mongo=mongo,
        openmrs=openmrs,
        now=now,
        say=context.log.info,
        retried=set(keys),
    )
    if left.total:
        _report(context, left, "sent for runs whose process died")


def _report(context: dg.OpExecutionContext, summary: SubmissionSummary, what: str) -> None:
    # Shown on the openmrs_submissions asset in the UI, beside the per-file materializations.
    context.log_event(
        dg.AssetObservation(asset_key="openmrs_submissions", metadata=summary_metadata(summary))
    )
    context.log.info(
        f"{what} {summary.total} records: {summary.submitted} now in OpenMRS, {summary.failed} still waiting"
    )


@dg.job(
    description="Nightly: retry failed_retryable, in_flight and recent patient_not_found submissions, "
    "and send what a run whose process died left."
)
def openmrs_retry() -> None:
    retry_openmrs_submissions()
