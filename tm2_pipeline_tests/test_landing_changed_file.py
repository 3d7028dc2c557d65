"""The raw step ingests the bytes its run was started for, or nothing: a file that changed after the
sensor (or `tm2 ingest`) hashed it fails its run, and is picked up again as a new version."""

from pathlib import Path

import dagster as dg

from tm2_pipeline.assets.raw import CHANGED_AFTER_SEEN, raw_tm2_file
from tm2_pipeline.io_manager import Tm2TableIOManager
from tm2_pipeline.landing import sha256_of_file
from tm2_pipeline.partitions import tm2_csv_files
from tm2_pipeline.pipeline_config import PipelineConfig
from tm2_pipeline.resources.mongo import MongoResource
from tm2_pipeline.run_outcome import FAILED, classify_run
from tm2_pipeline.sensors import ingest_run_request

HEADER = "patient_id,tm2_code,condition_name,system_type,severity,diagnosis_date,practitioner_id\n"
ROW = "MRN-1001,SK00,Headache,Siddha,mild,2024-01-05,PR-1\n"


def run_raw_step(
    home: Path, request: dg.RunRequest, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    instance.add_dynamic_partitions(tm2_csv_files.name, [request.partition_key])
    resources = {
        "pipeline": PipelineConfig(tm2_home=str(home), landing_dir=str(home / "landing")),
        # A readable file never reaches the store in this step: the client is made, never used.
        "mongo": MongoResource(uri="mongodb://127.0.0.1:9", tm2_home=str(home)),
        "tm2_table_io_manager": Tm2TableIOManager(tm2_home=str(home)),
    }
    return dg.materialize(
        [raw_tm2_file],
        partition_key=request.partition_key,
        instance=instance,
        resources=resources,
        run_config=request.run_config,
        tags=request.tags,
        raise_on_error=False,
    )


def test_a_file_that_changed_after_it_was_seen_fails_its_run_and_stores_nothing(tmp_path):
    landed = tmp_path / "landing" / "clinic.csv"
    landed.parent.mkdir()
    landed.write_text(HEADER + ROW + "MRN-1002,SK01,Fever,Siddha,mild,2024-01-05,PR-1\n")
    request = ingest_run_request(landed.name, landed, sha256_of_file(landed))
    landed.write_text(HEADER + ROW + "MRN-10")  # overwritten in place, cut short, after the sensor's look
    with dg.instance_for_test() as instance:
        result = run_raw_step(tmp_path, request, instance)
        assert not result.success
        outcome = classify_run(instance, result.run_id, result.success)
    assert outcome.status == FAILED and CHANGED_AFTER_SEEN in outcome.error
    assert not any((tmp_path / "files").glob("*")) and not (tmp_path / "tables").exists()


def test_the_bytes_the_run_was_started_for_are_ingested(tmp_path):
    landed = tmp_path / "landing" / "clinic.csv"
    landed.parent.mkdir()
    landed.write_text(HEADER + ROW)
    sha256 = sha256_of_file(landed)
    with dg.instance_for_test() as instance:
        result = run_raw_step(tmp_path, ingest_run_request(landed.name, landed, sha256), instance)
    assert result.success
    [materialization] = result.asset_materializations_for_node("raw_tm2_file")
    assert materialization.metadata["sha256"].value == sha256
    assert (tmp_path / "files" / sha256).read_bytes() == landed.read_bytes()
