"""The raw step ingests the bytes its run was started for, or nothing: a file that changed after the
sensor (or `tm2 ingest`) hashed it fails its run, and is picked up again as a new version; a run that
finds an older run of its file name under way stops before reading anything."""

from pathlib import Path

import dagster as dg

from tm2_pipeline.assets.raw import CHANGED_AFTER_SEEN, concurrent_run_message, raw_tm2_file
from tm2_pipeline.io_manager import Tm2TableIOManager
from tm2_pipeline.landing import sha256_of_file
from tm2_pipeline.partitions import PARTITION_TAG, older_unfinished_run, tm2_csv_files
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


def test_a_run_that_finds_an_older_run_of_its_file_name_under_way_stops_and_keeps_nothing(tmp_path):
    # The gap between "no run under way" and starting one: `tm2 ingest` started while the sensor's
    # run of the same name was being launched. Both running would share the partition's tables.
    from dagster._core.test_utils import create_run_for_test

    landed = tmp_path / "landing" / "clinic.csv"
    landed.parent.mkdir()
    landed.write_text(HEADER + ROW)
    request = ingest_run_request(landed.name, landed, sha256_of_file(landed))
    with dg.instance_for_test() as instance:
        tags = {**request.tags, PARTITION_TAG: landed.name}
        started = dg.DagsterRunStatus.STARTED
        older = create_run_for_test(instance, job_name="ingest_tm2_file", tags=tags, status=started)
        result = run_raw_step(tmp_path, request, instance)
        outcome = classify_run(instance, result.run_id, result.success)
    assert not result.success
    assert outcome.status == FAILED and concurrent_run_message(older) in outcome.error
    assert older.run_id in outcome.error and "started" in outcome.error
    assert not (tmp_path / "files").exists() and not (tmp_path / "tables").exists()


def test_only_an_older_unfinished_run_of_the_same_name_stops_a_run():
    from dagster._core.test_utils import create_run_for_test

    def run_of(name: str, status: dg.DagsterRunStatus) -> dg.DagsterRun:
        tags = {PARTITION_TAG: name}
        return create_run_for_test(instance, job_name="ingest_tm2_file", tags=tags, status=status)

    with dg.instance_for_test() as instance:
        first = run_of("clinic.csv", dg.DagsterRunStatus.STARTED)
        finished = run_of("clinic.csv", dg.DagsterRunStatus.SUCCESS)
        run_of("other.csv", dg.DagsterRunStatus.STARTED)
        second = run_of("clinic.csv", dg.DagsterRunStatus.STARTING)
        third = run_of("clinic.csv", dg.DagsterRunStatus.STARTED)
        assert older_unfinished_run(instance, "clinic.csv", first.run_id) is None  # the newer ones wait
        assert older_unfinished_run(instance, "clinic.csv", finished.run_id).run_id == first.run_id
        assert older_unfinished_run(instance, "clinic.csv", third.run_id).run_id == first.run_id
        instance.report_run_canceled(first)
        assert older_unfinished_run(instance, "clinic.csv", third.run_id).run_id == second.run_id
