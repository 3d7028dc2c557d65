"""Running the four assets on one file, as the sensor and `tm2 ingest` do, for tests."""

from pathlib import Path

import dagster as dg

from tm2_pipeline.jobs import TM2_ASSETS
from tm2_pipeline.partitions import tm2_csv_files

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "tm2_sample.csv"
# Every asset check the issues ask for, by name (written out here, not read from the code under test).
ALL_CHECKS = (
    "file_readable",
    "row_accounting",
    "unique_record_keys",
    "reject_rate",
    "stored_once",
    "codes_valid",
    "dates_valid",
    "submission_health",
)


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
