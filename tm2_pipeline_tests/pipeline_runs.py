"""Running the four assets on one file, as the sensor and `tm2 ingest` do, for tests."""

import logging
from pathlib import Path

import dagster as dg

from tm2_pipeline.jobs import TM2_ASSETS
from tm2_pipeline.partitions import tm2_csv_files

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "tm2_sample.csv"
# Every asset check the issues ask for, by asset (written out here, not read from the code under test).
CHECKS_BY_ASSET = {
    "raw_tm2_file": {"file_readable"},
    "validated_tm2_records": {"row_accounting", "unique_record_keys", "reject_rate"},
    "tm2_mongo_records": {"stored_once", "codes_valid", "dates_valid", "other_versions_covered"},
    "openmrs_submissions": {"submission_health"},
}
ALL_CHECKS = tuple(name for names in CHECKS_BY_ASSET.values() for name in sorted(names))


def materialize_file(path: Path, resources: dict, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    instance.add_dynamic_partitions(tm2_csv_files.name, [path.name])
    return dg.materialize(
        TM2_ASSETS,
        partition_key=path.name,
        resources=resources,
        instance=instance,
        run_config={"ops": {"raw_tm2_file": {"config": {"source_path": str(path)}}}},
        raise_on_error=False,
    )


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [materialization] = result.asset_materializations_for_node(asset)
    return {name: value.value for name, value in materialization.metadata.items()}


def error_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """What the run logged at ERROR (context.log.error and Dagster's own errors)."""
    return [entry.user_message for entry in instance.all_logs(run_id) if entry.level >= logging.ERROR]
