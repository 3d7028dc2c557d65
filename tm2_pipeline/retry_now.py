"""`tm2 retry`: the nightly OpenMRS retry job, run now in this process (one Dagster run, shown in the
UI like the nightly one), for a laptop where `tm2 ui`, and so the schedule, is not running."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import dagster as dg
from dagster import DagsterEventType

from tm2_pipeline.abandoned_runs import in_process_run_tags
from tm2_pipeline.definitions import build_definitions
from tm2_pipeline.ingestion import METADATA_COUNTS
from tm2_pipeline.jobs import RELEASED
from tm2_pipeline.run_outcome import SUCCEEDED, classify_run
from tm2_pipeline.settings import Settings
from tm2_pipeline.submission_run import IN_OPENMRS

RETRY_JOB = "openmrs_retry"
# The retry op's observations (one for the retry, one for what dead runs left) -> the report's counts.
_COUNTED = {
    "dagster/row_count": "records",
    **METADATA_COUNTS["openmrs_submissions"],  # as `tm2 ingest` reports them
    RELEASED: "released",
}


@dataclass
class RetryReport:
    status: str
    run_id: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTED.values(), 0))
    error: str | None = None
    retried: bool = False  # the retry got as far as its outcome (else the error says where it stopped)

    def as_json(self) -> dict:
        return {"status": self.status, "run_id": self.run_id, **self.counts, "error": self.error}


def retry_now(settings: Settings, instance: dg.DagsterInstance, *, release: bool = False) -> RetryReport:
    """Run the retry job once; `release`: also the records waiting for a person (see RetryConfig)."""
    job = build_definitions(settings).resolve_job_def(RETRY_JOB)
    run_id = str(uuid.uuid4())  # chosen here to name this process on the run (as tm2 ingest does)
    result = job.execute_in_process(
        run_id=run_id,
        instance=instance,
        run_config={
            "ops": {"retry_openmrs_submissions": {"config": {"release": release}}},
            # The run's log stays in the instance; the terminal gets the counts and the reason.
            "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
        },
        # Named: a `tm2 retry` killed meanwhile is ended by the next look for dead runs, not left
        # "started" for ever, holding one of the run queue's places.
        tags={"tm2/started_by": "cli", **in_process_run_tags(run_id)},
        raise_on_error=False,
    )
    outcome = classify_run(instance, result.run_id, result.success)
    report = RetryReport(status=outcome.status, run_id=result.run_id, error=outcome.error)
    for entry in instance.all_logs(result.run_id, of_type=DagsterEventType.ASSET_OBSERVATION):
        observation = entry.dagster_event.event_specific_data.asset_observation
        report.retried |= IN_OPENMRS in observation.metadata
        for name, value in observation.metadata.items():
            if name in _COUNTED:
                report.counts[_COUNTED[name]] += int(value.value)
    if report.status != SUCCEEDED and not report.error:
        report.error = "the retry failed; see the Dagster UI"
    return report
