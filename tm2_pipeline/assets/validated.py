"""validated_tm2_records: the accepted rows of one file, normalized; bad rows quarantined with reasons."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd

from tm2_pipeline.partitions import tm2_csv_files
from tm2_pipeline.pipeline_config import PipelineConfig
from tm2_pipeline.quality_report import quality_report_markdown
from tm2_pipeline.resources.mongo import MongoResource
from tm2_pipeline.validation import ValidationResult, validate_tm2_bytes

ROW_ACCOUNTING = "row_accounting"
UNIQUE_RECORD_KEYS = "unique_record_keys"
REJECT_RATE = "reject_rate"
# At most this many row numbers are listed in metadata; the full list is in the quarantine.
ROW_LIST_LIMIT = 200


def source_attrs(file_name: str, sha256: str) -> dict[str, str]:
    return {"file": file_name, "sha256": sha256}


def reject_rate_outcome(
    result: ValidationResult, warn: float, block: float
) -> tuple[bool, dg.AssetCheckSeverity]:
    """(passed, severity): above `block` the file is blocked; above `warn` it only warns."""
    rate = result.rejected / result.rows if result.rows else 0.0
    if rate > block:
        return False, dg.AssetCheckSeverity.ERROR
    if rate > warn:
        return False, dg.AssetCheckSeverity.WARN
    return True, dg.AssetCheckSeverity.WARN


@dg.asset(
    partitions_def=tm2_csv_files,
    io_manager_key="tm2_table_io_manager",
    check_specs=[
        dg.AssetCheckSpec(
            ROW_ACCOUNTING,
            asset="validated_tm2_records",
            blocking=True,
            description="rows == accepted + duplicates + rejected",
        ),
        dg.AssetCheckSpec(
            UNIQUE_RECORD_KEYS,
            asset="validated_tm2_records",
            blocking=True,
            description="no record key appears twice among accepted rows",
        ),
        dg.AssetCheckSpec(
            REJECT_RATE,
            asset="validated_tm2_records",
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
    result = validate_tm2_bytes(
        Path(raw_tm2_file["copy"]).read_bytes(), today=pipeline.today(), day_first=pipeline.day_first
    )
    file_name, sha256 = raw_tm2_file["file"], raw_tm2_file["sha256"]
    now = datetime.now(UTC)
    mongo.rejects().replace_for_file(
        file_name=file_name,
        sha256=sha256,
        partition=context.partition_key,
        rejected_rows=result.rejected_rows,
        now=now,
    )

    counts = {
        "rows": result.rows,
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "rejected": result.rejected,
    }
    rate_passed, rate_severity = reject_rate_outcome(result, pipeline.reject_warn, pipeline.reject_block)
    blocked = not rate_passed and rate_severity == dg.AssetCheckSeverity.ERROR
    mongo.ingestions().record_outcome(
        file=file_name,
        sha256=sha256,
        status="blocked" if blocked else "validated",
        counts=counts,
        at=now,
        run_id=context.run.run_id,
        error=f"reject rate {result.rejected}/{result.rows} is above TM2_REJECT_BLOCK" if blocked else None,
    )

    accepted = result.accepted_records
    accepted.attrs = source_attrs(file_name, sha256)  # travels inside the Parquet file
    yield dg.Output(accepted, metadata=_metadata(result, counts, file_name))
    yield from _checks(result, rate_passed, rate_severity, pipeline)


def _metadata(result: ValidationResult, counts: dict[str, int], file_name: str) -> dict:
    metadata: dict = {
        "dagster/row_count": result.accepted,
        **counts,
        "encoding": result.encoding,
        "delimiter": repr(result.delimiter),
        "quality_report": dg.MetadataValue.md(quality_report_markdown(result, file_name)),
        "duplicate_rows": [d["row"] for d in result.duplicate_rows[:ROW_LIST_LIMIT]],
        "rejected_rows": [r["row"] for r in result.rejected_rows[:ROW_LIST_LIMIT]],
    }
    if result.ignored_columns:
        metadata["warning_ignored_columns"] = ", ".join(result.ignored_columns)
    return metadata


def _checks(result: ValidationResult, rate_passed: bool, rate_severity, pipeline: PipelineConfig):
    accounted = result.accepted + result.duplicates + result.rejected
    yield dg.AssetCheckResult(
        check_name=ROW_ACCOUNTING,
        passed=result.rows == accounted,
        metadata={"rows": result.rows, "accounted": accounted},
    )
    keys: pd.Series = result.accepted_records["record_key"]
    repeated = int(keys.duplicated().sum())
    yield dg.AssetCheckResult(
        check_name=UNIQUE_RECORD_KEYS, passed=repeated == 0, metadata={"repeated_keys": repeated}
    )
    rate = result.rejected / result.rows if result.rows else 0.0
    yield dg.AssetCheckResult(
        check_name=REJECT_RATE,
        passed=rate_passed,
        severity=rate_severity,
        metadata={
            "reject_rate": round(rate, 4),
            "warn_above": pipeline.reject_warn,
            "block_above": pipeline.reject_block,
        },
    )
