"""The landing sensor's cursor, run keys, caps and file moves; the nightly schedule's run key."""

import datetime as dt
import json
import os
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from tm2_pipeline.jobs import TM2_ASSETS
from tm2_pipeline.landing import sha256_of_file
from tm2_pipeline.partitions import tm2_csv_files
from tm2_pipeline.pipeline_config import PipelineConfig
from tm2_pipeline.schedules import build_nightly_retry_schedule
from tm2_pipeline.sensors import FILE_VERSION_TAG, build_landing_sensor, ingest_run_request

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "tm2_sample.csv"


@pytest.fixture
def home(tmp_path) -> Path:
    (tmp_path / "landing").mkdir()
    return tmp_path


def tick(sensor, instance, home: Path, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"pipeline": PipelineConfig(tm2_home=str(home), landing_dir=str(home / "landing"))},
    )
    return sensor(context)


def land(home: Path, name: str, text: str) -> Path:
    """Write then atomically rename, as a well-behaved uploader does."""
    partial = home / "landing" / f"{name}.part"
    partial.write_text(text)
    target = home / "landing" / name
    os.replace(partial, target)
    return target


def test_a_file_is_requested_once_stable_with_a_content_run_key(home):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    path = land(home, "clinic_a.csv", "some,content\n")
    (home / "landing" / "upload.csv.part").write_text("half")
    (home / "landing" / ".DS_Store").write_text("x")
    with dg.instance_for_test() as instance:
        first = tick(sensor, instance, home)
        assert first.run_requests == []  # seen once: its writer may not be done
        assert set(json.loads(first.cursor)) == {"clinic_a.csv"}

        second = tick(sensor, instance, home, first.cursor)
        [request] = second.run_requests
        sha = sha256_of_file(path)
        assert request.partition_key == "clinic_a.csv"
        assert request.run_key == f"clinic_a.csv:{sha[:12]}"
        assert request.run_config["ops"]["raw_tm2_file"]["config"]["source_path"] == str(path)
        [add] = second.dynamic_partitions_requests
        assert list(add.partition_keys) == ["clinic_a.csv"]


def test_a_name_that_cannot_be_a_partition_key_goes_to_failed_without_a_run(home):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    land(home, "clinic,march.csv", "some,content\n")
    with dg.instance_for_test() as instance:
        first = tick(sensor, instance, home)
        second = tick(sensor, instance, home, first.cursor)
        assert second.run_requests == [] and second.dynamic_partitions_requests == []
        assert instance.get_dynamic_partitions(tm2_csv_files.name) == []
    assert not (home / "landing" / "clinic,march.csv").exists()
    assert (home / "failed" / "clinic,march.csv").read_text() == "some,content\n"
    note = (home / "failed" / "clinic,march.csv.error.txt").read_text()
    assert "cannot be used: rename it without commas" in note


def test_a_growing_file_waits(home):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    path = home / "landing" / "growing.csv"
    path.write_text("a")
    with dg.instance_for_test() as instance:
        first = tick(sensor, instance, home)
        path.write_text("a,b,c")
        second = tick(sensor, instance, home, first.cursor)
        assert second.run_requests == []
        assert len(tick(sensor, instance, home, second.cursor).run_requests) == 1


def test_requests_per_tick_are_capped(home):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=2)
    for name in ("a.csv", "b.csv", "c.csv"):
        land(home, name, name)
    with dg.instance_for_test() as instance:
        first = tick(sensor, instance, home)
        assert len(tick(sensor, instance, home, first.cursor).run_requests) == 2


def test_a_corrected_file_with_a_known_name_gets_a_new_run_key(home):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    land(home, "clinic.csv", "version 2\n")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tm2_csv_files.name, ["clinic.csv"])
        first = tick(sensor, instance, home)
        second = tick(sensor, instance, home, first.cursor)
        [request] = second.run_requests
        assert request.run_key.endswith(sha256_of_file(home / "landing" / "clinic.csv")[:12])
        assert second.dynamic_partitions_requests == []  # the name is already a partition


@dg.asset(partitions_def=tm2_csv_files)
def raw_tm2_file() -> None:
    raise ConnectionError("cannot reach MongoDB at db.example:27017")


def run_tagged(instance, request: dg.RunRequest, assets=(raw_tm2_file,), **kwargs) -> None:
    instance.add_dynamic_partitions(tm2_csv_files.name, [request.partition_key])
    dg.materialize(
        list(assets),
        partition_key=request.partition_key,
        instance=instance,
        tags=request.tags,
        raise_on_error=False,
        **kwargs,
    )


def test_infrastructure_failures_are_retried_then_the_file_goes_to_failed(home):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    path = land(home, "clinic.csv", "x\n")
    sha = sha256_of_file(path)
    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance, home).cursor
        for attempt in (1, 2, 3):
            result = tick(sensor, instance, home, cursor)
            cursor = result.cursor
            [request] = result.run_requests
            assert request.run_key == f"clinic.csv:{sha[:12]}" + ("" if attempt == 1 else f":{attempt}")
            run_tagged(instance, request)
        final = tick(sensor, instance, home, cursor)
        assert final.run_requests == []
    assert not path.exists()
    assert (home / "failed" / "clinic.csv").read_text() == "x\n"
    note = (home / "failed" / "clinic.csv.error.txt").read_text()
    assert "after 3 attempts" in note and "cannot reach MongoDB" in note


@pytest.mark.integration
def test_a_succeeded_file_moves_to_processed_and_is_not_run_again(pipeline_resources):
    home = Path(pipeline_resources["pipeline"].tm2_home)
    landed = home / "landing" / SAMPLE.name
    shutil.copyfile(SAMPLE, landed)
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance, home).cursor
        [request] = tick(sensor, instance, home, cursor).run_requests
        run_tagged(
            instance, request, assets=TM2_ASSETS, resources=pipeline_resources, run_config=request.run_config
        )
        after = tick(sensor, instance, home, cursor)
        assert after.run_requests == []
        assert json.loads(after.cursor) == {}
        runs = instance.get_runs(
            filters=dg.RunsFilter(tags={FILE_VERSION_TAG: request.tags[FILE_VERSION_TAG]})
        )
        assert len(runs) == 1
    today = dt.datetime.now(ZoneInfo("Asia/Kolkata")).date().isoformat()
    assert (home / "processed" / today / SAMPLE.name).read_bytes() == SAMPLE.read_bytes()
    assert not landed.exists()


@pytest.mark.integration
def test_refused_file_moves_to_failed_with_its_reason(pipeline_resources):
    home = Path(pipeline_resources["pipeline"].tm2_home)
    landed = home / "landing" / "empty.csv"
    landed.write_bytes(b"")
    request = ingest_run_request("empty.csv", landed, sha256_of_file(landed))
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    with dg.instance_for_test() as instance:
        run_tagged(
            instance, request, assets=TM2_ASSETS, resources=pipeline_resources, run_config=request.run_config
        )
        cursor = tick(sensor, instance, home).cursor
        assert tick(sensor, instance, home, cursor).run_requests == []
    assert not landed.exists()
    assert (home / "failed" / "empty.csv").exists()
    assert "empty" in (home / "failed" / "empty.csv.error.txt").read_text()


def test_nightly_schedule_targets_the_retry_job_once_per_night():
    schedule = build_nightly_retry_schedule("Asia/Kolkata")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "Asia/Kolkata"
    assert schedule.job_name == "openmrs_retry"
    night = dt.datetime(2026, 3, 1, 2, 0, tzinfo=ZoneInfo("Asia/Kolkata"))
    with (
        dg.instance_for_test() as instance,
        # Closed as a context: else it leaves the instance's state storage set for later tests.
        dg.build_schedule_context(instance=instance, scheduled_execution_time=night) as context,
    ):
        request = schedule.evaluate_tick(context).run_requests[0]
    assert request.run_key == "openmrs_retry:2026-03-01"
