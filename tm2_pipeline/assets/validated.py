"""validated_tm2_records: the accepted rows of one file, normalized; bad rows quarantined with reasons."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from tm2_pipeline.abandoned_runs import tag_run_worker
from tm2_pipeline.accepted_table import AcceptedTable, AcceptedTableWriter, staged_tables, staging_path
from tm2_pipeline.assets.refusal import record_refusal, refusal_failure
from tm2_pipeline.partitions import tm2_csv_files
from tm2_pipeline.pipeline_config import PipelineConfig
from tm2_pipeline.reading import FileRefused
from tm2_pipeline.resources.mongo import MongoResource
from tm2_pipeline.validation import validate_tm2_export
from tm2_pipeline.validation_summary import ValidationSummary, reusable, summarize

ASSET_NAME = "validated_tm2_records"
ROW_ACCOUNTING = "row_accounting"
UNIQUE_RECORD_KEYS = "unique_record_keys"
REJECT_RATE = "reject_rate"


def reject_rate_outcome(
    rows: int, rejected: int, warn: float, block: float
) -> tuple[bool, dg.AssetCheckSeverity]:
    """(passed, severity): above `block` the file is blocked; above `warn` it only warns."""
    rate = rejected / rows if rows else 0.0
    if rate > block:
        return False, dg.AssetCheckSeverity.ERROR
    if rate > warn:
        return False, dg.AssetCheckSeverity.WARN
    return True, dg.AssetCheckSeverity.WARN


def reject_rate_message(
    rows: int, rejected: int, warn: float, block: float, *, dry_run: bool = False
) -> str | None:
    """What a failed reject-rate check says, naming the setting it went past; None if it passed."""
    passed, severity = reject_rate_outcome(rows, rejected, warn, block)
    if passed:
        return None
    share = f"{rejected} of {rows} rows rejected ({rejected / rows:.1%})"
    if severity == dg.AssetCheckSeverity.ERROR and dry_run:
        return (
            f"{share}, above TM2_REJECT_BLOCK={block}: the file would be blocked before the store "
            "(a dry run writes nothing: ingest it to keep its rejected rows, with their reasons, in "
            "tm2_rejects)"
        )
    if severity == dg.AssetCheckSeverity.ERROR:
        return (
            f"{share}, above TM2_REJECT_BLOCK={block}: the file is blocked before the store "
            "(its rejected rows are in tm2_rejects with their reasons)"
        )
    return f"{share}, above TM2_REJECT_WARN={warn}"


@dg.asset(
    partitions_def=tm2_csv_files,
    io_manager_key="tm2_table_io_manager",
    check_specs=[
        dg.AssetCheckSpec(
            ROW_ACCOUNTING,
            asset=ASSET_NAME,
            blocking=True,
            description="rows == accepted + duplicates + rejected",
        ),
        dg.AssetCheckSpec(
            UNIQUE_RECORD_KEYS,
            asset=ASSET_NAME,
            blocking=True,
            description="no record key appears twice among accepted rows",
        ),
        dg.AssetCheckSpec(
            REJECT_RATE,
            asset=ASSET_NAME,
            blocking=True,
            description="warns above TM2_REJECT_WARN; blocks the file above TM2_REJECT_BLOCK",
        ),
    ],
    description="Accepted records of one file (normalized, keyed, hashed); rejects go to tm2_rejects.",
    group_name="tm2",
)
def validated_tm2_records(
    context: dg.AssetExecutionContext,
    raw_tm2_file: dict,
    pipeline: PipelineConfig,
    mongo: MongoResource,
):
    tag_run_worker(context.instance, context.run)  # a retry from failure may start here
    file_name, sha256 = raw_tm2_file["file"], raw_tm2_file["sha256"]
    today, day_first = pipeline.today(), pipeline.day_first
    now = datetime.now(UTC)
    table_path = pipeline.home.table_path(ASSET_NAME, context.partition_key)
    _remove_abandoned_staging(context, table_path)
    earlier = reusable(table_path, sha256=sha256, today=today, day_first=day_first)
    if earlier:
        # The same bytes, rules and day: the result cannot differ, and its rejects are already
        # quarantined (keyed by file hash and row).
        accepted, summary = earlier
        context.log.info("unchanged file validated earlier today: reusing its validated table")
    else:
        copy = Path(raw_tm2_file["copy"])
        # Accepted records go to disk chunk by chunk (flat memory); the IO manager moves the
        # finished table into place. A failure on the way leaves no partial table behind.
        staging = staging_path(table_path, context.run.run_id)
        # Rejected rows go to the quarantine chunk by chunk too (keyed by file hash and row).
        rejects = mongo.rejects().replacing(
            file_name=file_name, sha256=sha256, partition=context.partition_key, now=now
        )
        try:
            with AcceptedTableWriter(staging) as writer, rejects as quarantine:
                result = validate_tm2_export(
                    copy, today=today, day_first=day_first, sink=writer.write, reject_sink=quarantine.write
                )
                summary = summarize(result, file=file_name, sha256=sha256, today=today, day_first=day_first)
                accepted = writer.close(summary.table_attrs())
        except FileRefused as refusal:  # a CSV structure broken far down the file (a runaway quote)
            mongo.rejects().remove_for_file(sha256)  # refused as a whole: its rows are not rejects
            record_refusal(
                refusal,
                name=file_name,
                copy=copy,
                sha256=sha256,
                home=pipeline.home,
                mongo=mongo,
                run_id=context.run.run_id,
            )
            raise refusal_failure(refusal) from None

    rate_passed, rate_severity = reject_rate_outcome(
        summary.rows, summary.rejected, pipeline.reject_warn, pipeline.reject_block
    )
    blocked = not rate_passed and rate_severity == dg.AssetCheckSeverity.ERROR
    rate_message = reject_rate_message(
        summary.rows, summary.rejected, pipeline.reject_warn, pipeline.reject_block
    )
    mongo.ingestions().record_outcome(
        file=file_name,
        sha256=sha256,
        status="blocked" if blocked else "validated",
        counts=summary.counts,
        at=now,
        run_id=context.run.run_id,
        error=rate_message if blocked else None,
    )
    if blocked:
        # Dagster's own error names the failed check only; this says why, where runs are watched.
        context.log.error(f"{file_name} blocked: {rate_message}")
    # Checked before the output is handed over: the IO manager then moves the table into place.
    checks = list(_checks(summary, accepted, rate_passed, rate_severity, rate_message, pipeline))
    yield dg.Output(accepted, metadata=_metadata(summary, reused=earlier is not None))
    yield from checks


def _remove_abandoned_staging(context: dg.AssetExecutionContext, table_path: Path) -> None:
    """Staging tables of this partition left by runs that ended without handing them over (killed,
    or failed after the table was sealed); one of a run still going is its own business."""
    for run_id, path in staged_tables(table_path).items():
        run = context.instance.get_run_by_id(run_id)
        if run_id != context.run.run_id and (run is None or run.is_finished):
            path.unlink(missing_ok=True)
            context.log.info(f"removed a staging table abandoned by run {run_id}")


def _metadata(summary: ValidationSummary, reused: bool) -> dict:
    metadata: dict = {
        "dagster/row_count": summary.accepted,
        **summary.counts,
        "encoding": summary.encoding,
        "delimiter": repr(summary.delimiter),
        "quality_report": dg.MetadataValue.md(summary.quality_report),
        "duplicate_rows": summary.duplicate_rows,
        "rejected_rows": summary.rejected_rows,
        "reused_earlier_validation": reused,
    }
    if summary.ignored_columns:
        metadata["warning_ignored_columns"] = ", ".join(summary.ignored_columns)
    return metadata


def _checks(
    summary: ValidationSummary,
    accepted: AcceptedTable,
    rate_passed: bool,
    rate_severity: dg.AssetCheckSeverity,
    rate_message: str | None,
    pipeline: PipelineConfig,
):
    accounted = summary.accepted + summary.duplicates + summary.rejected
    yield dg.AssetCheckResult(
        check_name=ROW_ACCOUNTING,
        passed=summary.rows == accounted and accepted.num_rows == summary.accepted,
        metadata={"rows": summary.rows, "accounted": accounted},
    )
    repeated = accepted.num_rows - accepted.distinct_count("record_key")
    yield dg.AssetCheckResult(
        check_name=UNIQUE_RECORD_KEYS, passed=repeated == 0, metadata={"repeated_keys": repeated}
    )
    yield dg.AssetCheckResult(
        check_name=REJECT_RATE,
        passed=rate_passed,
        severity=rate_severity,
        description=rate_message,
        metadata={
            "reject_rate": round(summary.reject_rate, 4),
            "warn_above": pipeline.reject_warn,
            "block_above": pipeline.reject_block,
        },
    )
