"""openmrs_submissions: each stored record of one file sent to OpenMRS as a Condition, exactly once."""

from datetime import UTC, datetime

import dagster as dg

from tm2_pipeline.abandoned_runs import tag_run_worker
from tm2_pipeline.accepted_table import AcceptedTable
from tm2_pipeline.openmrs.states import SubmissionSummary
from tm2_pipeline.partitions import tm2_csv_files
from tm2_pipeline.pipeline_config import PipelineConfig
from tm2_pipeline.resources.mongo import MongoResource
from tm2_pipeline.resources.openmrs import OpenMRSResource
from tm2_pipeline.submission_run import IN_OPENMRS, ledger_counts, outcome_counts, submit_stored_records

SUBMISSION_HEALTH = "submission_health"

# Connection trouble with OpenMRS: retry the step. Every retry re-checks before it re-sends, so no
# record can be created twice; a credentials error is raised as a non-retryable Failure.
OPENMRS_RETRY = dg.RetryPolicy(
    max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


@dg.asset(
    partitions_def=tm2_csv_files,
    deps=["tm2_mongo_records"],
    retry_policy=OPENMRS_RETRY,
    check_specs=[
        dg.AssetCheckSpec(
            SUBMISSION_HEALTH,
            asset="openmrs_submissions",
            description="warns when the share of records not in OpenMRS passes TM2_SUBMISSION_WARN",
        ),
    ],
    description="The file's records as OpenMRS Conditions; every attempt logged in openmrs_submissions.",
    group_name="tm2",
)
def openmrs_submissions(
    context: dg.AssetExecutionContext,
    validated_tm2_records: AcceptedTable,
    pipeline: PipelineConfig,
    mongo: MongoResource,
    openmrs: OpenMRSResource,
):
    tag_run_worker(context.instance, context.run)  # a retry from failure may start here
    table = validated_tm2_records
    file_name, sha256 = table.attrs["file"], table.attrs["sha256"]
    keys = table.column("record_key").to_pylist()
    summary = submit_stored_records(keys, mongo=mongo, openmrs=openmrs, now=datetime.now(UTC))
    metadata = summary_metadata(summary)
    mongo.ingestions().record_outcome(
        file=file_name,
        sha256=sha256,
        status="succeeded",
        counts=ledger_counts(summary.submitted, summary.state_counts),
        at=datetime.now(UTC),
        run_id=context.run.run_id,
    )
    yield dg.MaterializeResult(metadata=metadata)
    yield submission_health(summary, pipeline.submission_warn)


def summary_metadata(summary: SubmissionSummary) -> dict:
    return {
        "dagster/row_count": summary.total,
        "submitted_this_run": summary.submitted,
        # Together every record of the file: in OpenMRS, left for later, waiting for a person.
        **outcome_counts(summary.state_counts),
        "states": dg.MetadataValue.md(
            "| state | records |\n| --- | --- |\n"
            + "\n".join(f"| {state} | {count} |" for state, count in sorted(summary.state_counts.items()))
        ),
    }


def submission_health(summary: SubmissionSummary, warn_above: float) -> dg.AssetCheckResult:
    """Warn when too many records are not in OpenMRS (waiting, failed, or needing a person)."""
    not_in_openmrs = summary.total - outcome_counts(summary.state_counts)[IN_OPENMRS]
    share = not_in_openmrs / summary.total if summary.total else 0.0
    return dg.AssetCheckResult(
        check_name=SUBMISSION_HEALTH,
        passed=share <= warn_above,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"failure_share": round(share, 4), "warn_above": warn_above},
    )
