"""The landing sensor's cursor, run keys, caps and file moves; the nightly schedule's run key."""

import datetime as dt
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import yaml
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteRepositoryOrigin
from dagster._core.test_utils import create_run_for_test

from tm2_pipeline import sensors
from tm2_pipeline.abandoned_runs import RUN_PROCESS_TAG, tag_for
from tm2_pipeline.jobs import TM2_ASSETS
from tm2_pipeline.landing import sha256_of_file
from tm2_pipeline.landing_watch import read_cursor
from tm2_pipeline.partitions import tm2_csv_files
from tm2_pipeline.pipeline_config import PipelineConfig
from tm2_pipeline.run_outcome import BLOCKED, RunOutcome
from tm2_pipeline.schedules import build_nightly_retry_schedule
from tm2_pipeline.sensors import ATTEMPT_TAG, FILE_VERSION_TAG, build_landing_sensor
from tm2_pipeline_tests.process_groups import ended_process_identity

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE = REPO_ROOT / "data" / "tm2_sample.csv"


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
        assert request.run_key == f"clinic_a.csv:{sha[:12]}@0"  # the content, and no earlier run
        assert request.run_config["ops"]["raw_tm2_file"]["config"]["source_path"] == str(path)
        [add] = second.dynamic_partitions_requests
        assert list(add.partition_keys) == ["clinic_a.csv"]


def test_a_missing_landing_dir_is_said_in_the_tick_and_keeps_the_cursor(home):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    land(home, "clinic_a.csv", "some,content\n")
    with dg.instance_for_test() as instance:
        first = tick(sensor, instance, home)
        (home / "landing").rename(home / "elsewhere")  # an unmounted share, a mistyped setting
        missing = tick(sensor, instance, home, first.cursor)
    assert missing.skip_reason and "TM2_LANDING_DIR) is not a directory" in missing.skip_reason.skip_message
    assert str(home / "landing") in missing.skip_reason.skip_message
    assert missing.cursor == first.cursor and missing.run_requests == []


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
        sha = sha256_of_file(home / "landing" / "clinic.csv")
        assert request.run_key.startswith(f"clinic.csv:{sha[:12]}@")
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
        keys = []
        for attempt in (1, 2, 3):
            result = tick(sensor, instance, home, cursor)
            cursor = result.cursor
            [request] = result.run_requests
            assert request.tags[ATTEMPT_TAG] == str(attempt)
            assert request.run_key.startswith(f"clinic.csv:{sha[:12]}@")
            keys.append(request.run_key)
            assert tick(sensor, instance, home, cursor).run_requests[0].run_key == keys[-1]  # replayed
            run_tagged(instance, request)
        assert len(set(keys)) == 3  # Dagster skips a run key it has seen: each attempt has its own
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
        # A replayed tick: the cursor from before the request (the daemon could not store the
        # requesting tick's), which does not know the file was started on.
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
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance, home).cursor
        result = tick(sensor, instance, home, cursor)
        [request] = result.run_requests
        assert request.tags["tm2/sha256"] == sha256_of_file(landed)
        run_tagged(
            instance, request, assets=TM2_ASSETS, resources=pipeline_resources, run_config=request.run_config
        )
        assert tick(sensor, instance, home, result.cursor).run_requests == []
    assert not landed.exists()
    assert (home / "failed" / "empty.csv").exists()
    assert "empty" in (home / "failed" / "empty.csv.error.txt").read_text()


def record_run(
    instance, request: dg.RunRequest, status: dg.DagsterRunStatus, *, process: str | None = None
) -> dg.DagsterRun:
    """A run of the request's partition in the given state, as the daemon would have made it;
    `process`: where the process running it ran (`<host>:<pid>:<start time>`)."""
    run_id = str(uuid.uuid4())
    tags = {**request.tags, "dagster/partition": request.partition_key}
    if process is not None:
        tags[RUN_PROCESS_TAG] = tag_for(run_id, process)
    # A queued run must say where its job comes from: a code location, as the daemon's runs do.
    repository = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("tm2_pipeline"), "__repository__")
    origin = repository.get_job_origin("ingest_tm2_file")
    return create_run_for_test(
        instance,
        job_name="ingest_tm2_file",
        run_id=run_id,
        tags=tags,
        status=status,
        remote_job_origin=origin,
    )


def land_and_request(sensor, instance, home: Path, name: str, text: str) -> tuple[dg.RunRequest, str]:
    cursor = tick(sensor, instance, home).cursor
    land(home, name, text)
    cursor = tick(sensor, instance, home, cursor).cursor
    result = tick(sensor, instance, home, cursor)
    [request] = result.run_requests
    return request, result.cursor


def test_names_that_cannot_be_stored_are_refused_without_stopping_other_files(home):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    land(home, "good.csv", "a\n")
    too_long_for_the_staging_table = "m" * 206 + ".csv"  # 210 bytes: fine alone, not with a run id
    too_long_for_its_note = "x" * 246 + ".csv"  # 250 bytes: `.error.txt` would not fit
    not_utf8 = os.fsdecode(b"cl\xednica.csv")  # Latin-1 bytes, as an old Windows share writes them
    for name in (too_long_for_the_staging_table, too_long_for_its_note, not_utf8):
        (home / "landing" / name).write_text("a\n")
    with dg.instance_for_test() as instance:
        first = tick(sensor, instance, home)
        second = tick(sensor, instance, home, first.cursor)
        assert [request.partition_key for request in second.run_requests] == ["good.csv"]
        assert set(json.loads(second.cursor)) == {"good.csv"}
        assert instance.get_dynamic_partitions(tm2_csv_files.name) == []
    assert sorted(os.listdir(home / "landing")) == ["good.csv"]
    kept = sorted(os.listdir(home / "failed"))
    notes = [name for name in kept if name.endswith(".error.txt")]
    assert len(kept) == 6 and len(notes) == 3
    assert all(len(os.fsencode(name)) <= 255 for name in kept)
    for note in notes:
        assert "rename it" in (home / "failed" / note).read_text()
        assert (home / "failed" / note.removesuffix(".error.txt")).is_file()  # beside the file it is about


def test_one_files_unexpected_error_is_logged_without_its_message_and_skipped(home, monkeypatch, capfd):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    land(home, "a.csv", "a\n")
    land(home, "b.csv", "b\n")
    hash_file = sensors.sha256_of_file

    def unreadable_a(path: Path) -> str:
        if path.name == "a.csv":
            raise ValueError("row 3: MRN-0042 is not a number")  # a message may quote the file
        return hash_file(path)

    monkeypatch.setattr(sensors, "sha256_of_file", unreadable_a)
    with dg.instance_for_test() as instance:
        first = tick(sensor, instance, home)
        second = tick(sensor, instance, home, first.cursor)
    assert [request.partition_key for request in second.run_requests] == ["b.csv"]
    assert set(read_cursor(second.cursor)[0]) == {"a.csv", "b.csv"}
    logged = capfd.readouterr().err  # Dagster's own handler writes to stderr
    assert "'a.csv' skipped this tick: ValueError" in logged
    assert "MRN-0042" not in logged


@pytest.mark.parametrize(
    "status",
    [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ],
)
def test_a_corrected_file_waits_while_any_run_of_its_name_is_unfinished(home, status):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    with dg.instance_for_test() as instance:
        original, cursor = land_and_request(sensor, instance, home, "clinic.csv", "version 1\n")
        running = record_run(instance, original, status)
        land(home, "clinic.csv", "version 2\n")
        cursor = tick(sensor, instance, home, cursor).cursor
        waiting = tick(sensor, instance, home, cursor)
        assert waiting.run_requests == []
        instance.report_run_failed(running)
        [corrected] = tick(sensor, instance, home, waiting.cursor).run_requests
    assert corrected.tags["tm2/sha256"] == sha256_of_file(home / "landing" / "clinic.csv")


def test_the_local_instance_runs_one_run_per_file_name_at_a_time(tmp_path, monkeypatch):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        queue = instance.get_concurrency_config().run_queue_config
    assert queue is not None and queue.max_concurrent_runs == 2
    deploy = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.yaml").read_text())
    [per_partition] = [
        limit for limit in deploy["concurrency"]["runs"]["tag_concurrency_limits"]
        if limit["key"] == "dagster/partition"
    ]  # fmt: skip
    assert per_partition in queue.tag_concurrency_limits


def test_a_pending_file_is_hashed_once_not_every_tick(home, monkeypatch):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    hashed: list[str] = []

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return sha256_of_file(path)

    monkeypatch.setattr(sensors, "sha256_of_file", counting)
    with dg.instance_for_test() as instance:
        request, cursor = land_and_request(sensor, instance, home, "clinic.csv", "v1\n")
        record_run(instance, request, dg.DagsterRunStatus.QUEUED)
        for _ in range(3):
            cursor = tick(sensor, instance, home, cursor).cursor
        assert hashed == ["clinic.csv"]
        land(home, "clinic.csv", "v2\n")  # new bytes: hashed again once stable
        cursor = tick(sensor, instance, home, cursor).cursor
        tick(sensor, instance, home, cursor)
    assert hashed == ["clinic.csv", "clinic.csv"]


def test_the_original_sent_again_after_a_correction_is_ingested_again(home):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    with dg.instance_for_test() as instance:
        first_a, cursor = land_and_request(sensor, instance, home, "clinic.csv", "original\n")
        record_run(instance, first_a, dg.DagsterRunStatus.SUCCESS)
        cursor = tick(sensor, instance, home, cursor).cursor  # processed/
        b, cursor = land_and_request(sensor, instance, home, "clinic.csv", "correction\n")
        record_run(instance, b, dg.DagsterRunStatus.SUCCESS)
        cursor = tick(sensor, instance, home, cursor).cursor
        second_a, _ = land_and_request(sensor, instance, home, "clinic.csv", "original\n")
    assert second_a.tags[FILE_VERSION_TAG] == first_a.tags[FILE_VERSION_TAG]
    assert second_a.run_key not in {first_a.run_key, b.run_key}  # Dagster skips a run key seen before
    assert second_a.tags[ATTEMPT_TAG] == "1"


def test_each_refused_version_keeps_its_own_note(home):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    with dg.instance_for_test() as instance:
        cursor = None
        for text in ("version 1\n", "version 2\n"):
            land(home, "clinic,march.csv", text)
            cursor = tick(sensor, instance, home, cursor).cursor
            cursor = tick(sensor, instance, home, cursor).cursor
    second_sha = hashlib.sha256(b"version 2\n").hexdigest()
    second = f"clinic,march.{second_sha[:12]}.csv"
    assert (home / "failed" / second).read_text() == "version 2\n"
    assert (home / "failed" / f"{second}.error.txt").exists()
    assert (home / "failed" / "clinic,march.csv.error.txt").exists()


def test_a_failed_file_put_back_in_landing_is_tried_again(home):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    with dg.instance_for_test() as instance:
        request, cursor = land_and_request(sensor, instance, home, "clinic.csv", "x\n")
        keys = [request.run_key]
        for _ in range(3):  # an outage: three attempts fail
            record_run(instance, request, dg.DagsterRunStatus.FAILURE)
            result = tick(sensor, instance, home, cursor)
            cursor = result.cursor
            request = next(iter(result.run_requests), None)
            keys += [request.run_key] if request else []
        assert request is None and not (home / "landing" / "clinic.csv").exists()
        os.replace(home / "failed" / "clinic.csv", home / "landing" / "clinic.csv")  # the outage is over
        cursor = tick(sensor, instance, home, cursor).cursor
        [again] = tick(sensor, instance, home, cursor).run_requests
    assert again.tags[ATTEMPT_TAG] == "1"
    assert again.run_key not in keys


def test_a_blocked_file_put_back_in_landing_is_run_again(home, monkeypatch):
    # A person raised TM2_REJECT_BLOCK (or fixed the code list) and put the file back: a new run.
    blocked = RunOutcome(BLOCKED, "blocking check reject_rate: 3 of 4 rows rejected")
    monkeypatch.setattr(sensors, "classify_run", lambda *args: blocked)
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    with dg.instance_for_test() as instance:
        request, cursor = land_and_request(sensor, instance, home, "clinic.csv", "x\n")
        record_run(instance, request, dg.DagsterRunStatus.FAILURE)
        result = tick(sensor, instance, home, cursor)
        assert result.run_requests == [] and (home / "failed" / "clinic.csv").exists()
        os.replace(home / "failed" / "clinic.csv", home / "landing" / "clinic.csv")
        cursor = tick(sensor, instance, home, result.cursor).cursor
        [again] = tick(sensor, instance, home, cursor).run_requests
    assert again.tags[ATTEMPT_TAG] == "1" and again.run_key != request.run_key


def test_a_succeeded_file_put_back_in_landing_is_run_again(home):
    # MONGODB_URI now points at a new database (Atlas): the run history is not the store's content.
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    with dg.instance_for_test() as instance:
        request, cursor = land_and_request(sensor, instance, home, "clinic.csv", "x\n")
        record_run(instance, request, dg.DagsterRunStatus.SUCCESS)
        result = tick(sensor, instance, home, cursor)
        assert result.run_requests == [] and not (home / "landing" / "clinic.csv").exists()  # archived
        [archived] = (home / "processed").glob("*/clinic.csv")
        shutil.copyfile(archived, home / "landing" / "clinic.csv")
        cursor = tick(sensor, instance, home, result.cursor).cursor
        requested = tick(sensor, instance, home, cursor)
        [again] = requested.run_requests
        assert again.tags[ATTEMPT_TAG] == "1" and again.run_key != request.run_key
        record_run(instance, again, dg.DagsterRunStatus.SUCCESS)
        assert tick(sensor, instance, home, requested.cursor).run_requests == []  # archived after its run
    assert not (home / "landing" / "clinic.csv").exists()


def test_a_file_ingested_by_tm2_ingest_while_in_landing_is_archived_not_run_again(home):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    path = land(home, "clinic.csv", "x\n")
    with dg.instance_for_test() as instance:
        record_run(
            instance,
            sensors.ingest_run_request("clinic.csv", path, sha256_of_file(path)),
            dg.DagsterRunStatus.SUCCESS,
        )
        cursor = tick(sensor, instance, home).cursor
        assert tick(sensor, instance, home, cursor).run_requests == []
    assert not path.exists() and len(list((home / "processed").glob("*/clinic.csv"))) == 1


def meanwhile(monkeypatch: pytest.MonkeyPatch, name: str, happening: Callable[[], object]) -> None:
    """`happening()` takes place while the sensor looks: just before it calls `sensors.<name>`."""
    real = getattr(sensors, name)

    def first_this(*args):
        happening()
        return real(*args)

    monkeypatch.setattr(sensors, name, first_this)


def test_a_file_overwritten_after_the_scan_is_not_archived_as_the_version_ingested(home, monkeypatch):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    with dg.instance_for_test() as instance:
        request, cursor = land_and_request(sensor, instance, home, "clinic.csv", "version A\n")
        record_run(instance, request, dg.DagsterRunStatus.SUCCESS)
        # After the scan, before the move:
        meanwhile(monkeypatch, "classify_run", lambda: land(home, "clinic.csv", "version B, corrected\n"))
        cursor = tick(sensor, instance, home, cursor).cursor
        monkeypatch.undo()
        assert (home / "landing" / "clinic.csv").read_text() == "version B, corrected\n"
        assert not (home / "processed").exists()
        cursor = tick(sensor, instance, home, cursor).cursor
        [corrected] = tick(sensor, instance, home, cursor).run_requests
    assert corrected.tags["tm2/sha256"] == sha256_of_file(home / "landing" / "clinic.csv")


def test_a_canceled_run_is_not_started_again_by_the_sensor(home):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    with dg.instance_for_test() as instance:
        request, cursor = land_and_request(sensor, instance, home, "clinic.csv", "x\n")
        canceled = record_run(instance, request, dg.DagsterRunStatus.CANCELED)
        assert tick(sensor, instance, home, cursor).run_requests == []
    note = (home / "failed" / "clinic.csv.error.txt").read_text()
    assert note == f"canceled (run {canceled.run_id}): put the file back in landing to run it again\n"


def test_a_file_whose_runs_process_died_is_run_again_as_a_failed_attempt_not_failed(home):
    # Its run is canceled by the sensor itself (end_abandoned_runs): no person chose to stop it, so
    # the file is tried again, as after a failure, rather than sent to failed/ like a canceled run.
    dead = ended_process_identity()
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    with dg.instance_for_test() as instance:
        request, cursor = land_and_request(sensor, instance, home, "clinic.csv", "x\n")
        record_run(instance, request, dg.DagsterRunStatus.FAILURE)  # e.g. OpenMRS was down
        # Before the sensor's next attempt, someone runs the file with `tm2 ingest`, which is killed.
        path = home / "landing" / "clinic.csv"
        killed = record_run(
            instance,
            sensors.ingest_run_request("clinic.csv", path, sha256_of_file(path)),
            dg.DagsterRunStatus.STARTED,
            process=dead,
        )
        result = tick(sensor, instance, home, cursor)
        [again] = result.run_requests
        killed_record = instance.get_run_record_by_id(killed.run_id)
        assert killed_record.dagster_run.status == dg.DagsterRunStatus.CANCELED
        assert again.run_key == f"{again.tags[FILE_VERSION_TAG]}@{killed_record.storage_id}"
        assert again.tags[ATTEMPT_TAG] == "2"
        # The machine stops during each attempt: after the last one the file goes to failed/.
        record_run(instance, again, dg.DagsterRunStatus.STARTED, process=dead)
        result = tick(sensor, instance, home, result.cursor)
        [third] = result.run_requests
        assert third.tags[ATTEMPT_TAG] == "3"
        last = record_run(instance, third, dg.DagsterRunStatus.STARTED, process=dead)
        assert tick(sensor, instance, home, result.cursor).run_requests == []
        assert instance.get_run_by_id(last.run_id).status == dg.DagsterRunStatus.CANCELED
    assert not path.exists()
    note = (home / "failed" / "clinic.csv.error.txt").read_text()
    assert note.startswith("the process running it ended without finishing it, 3 attempts in a row")


def test_a_run_started_while_the_sensor_looks_holds_its_file_name(home, monkeypatch):
    # A `tm2 ingest` of the file starting between the sensor's read of the unfinished runs and of
    # the newest run: that newest run is unfinished, not a failed attempt to follow up.
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    with dg.instance_for_test() as instance:
        request, cursor = land_and_request(sensor, instance, home, "clinic.csv", "x\n")
        record_run(instance, request, dg.DagsterRunStatus.FAILURE)
        path = home / "landing" / "clinic.csv"
        by_tm2_ingest = sensors.ingest_run_request("clinic.csv", path, sha256_of_file(path))
        meanwhile(
            monkeypatch,
            "latest_run",
            lambda: record_run(instance, by_tm2_ingest, dg.DagsterRunStatus.STARTED),
        )
        assert tick(sensor, instance, home, cursor).run_requests == []
    assert (home / "landing" / "clinic.csv").exists()


def test_a_failed_run_that_dagster_is_about_to_retry_holds_its_file_name(home):
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    with dg.instance_for_test() as instance:
        request, cursor = land_and_request(sensor, instance, home, "clinic.csv", "x\n")
        run = record_run(instance, request, dg.DagsterRunStatus.STARTED)
        instance.report_run_failed(run)
        instance.add_run_tags(run.run_id, {"dagster/will_retry": "true"})  # a run worker crash
        result = tick(sensor, instance, home, cursor)
        assert result.run_requests == []  # run_retries creates the next run, not the sensor
        instance.add_run_tags(run.run_id, {"dagster/auto_retry_run_id": "created-by-the-daemon"})
        [second] = tick(sensor, instance, home, result.cursor).run_requests
    assert second.tags[ATTEMPT_TAG] == "2"


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


def test_the_cursor_stays_small_when_a_backfill_lands_at_once(home, capfd):
    # Every tick record carries the cursor: it must not grow with the number of files waiting.
    runs_per_tick = 2
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=runs_per_tick)
    names = [f"clinic_{n:03d}.csv" for n in range(120)]
    for name in names:
        land(home, name, name)
    in_progress_cap = sensors.IN_PROGRESS_TICKS * runs_per_tick
    cursor_cap = (sensors.IN_PROGRESS_TICKS + sensors.WATCHED_TICKS) * runs_per_tick
    with dg.instance_for_test() as instance:

        def ticks(count: int, cursor: str | None) -> tuple[list[str], str | None]:
            started = []
            for _ in range(count):
                result = tick(sensor, instance, home, cursor)
                cursor = result.cursor
                assert len(json.loads(cursor)) <= cursor_cap
                for request in result.run_requests:  # the daemon queues each requested run
                    record_run(instance, request, dg.DagsterRunStatus.QUEUED)
                    started.append(request.partition_key)
            return started, cursor

        started, cursor = ticks(15, None)
        # No run finishes: once the cap of files in progress is reached, no new file is started.
        assert started == names[:in_progress_cap]
        assert f"{in_progress_cap} files in progress (at most {in_progress_cap})" in capfd.readouterr().err
        # Their runs end and the files are archived: the sensor goes on with the next ones, in order.
        for name in started:
            (home / "landing" / name).unlink()
        more, cursor = ticks(4, cursor)
        assert more and more == names[in_progress_cap : in_progress_cap + len(more)]


def test_files_are_served_in_order_of_arrival_however_many_others_keep_landing(home):
    # One run per tick, and two exports land every tick (more than the sensor starts), all named to sort
    # before the first one; every third of them is moved in with an old mtime (`mv`, `cp -p`): each file
    # is still served in the order it landed, the first one first.
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=1)
    landed = [land(home, "zz_clinic.csv", "landed first\n").name]
    time.sleep(0.05)  # a file system with a coarse clock could give the next file the same ctime
    served: list[str] = []
    cursor = None
    with dg.instance_for_test() as instance:
        for n in range(30):
            for k in (2 * n, 2 * n + 1):
                partial = home / "landing" / f"a_{k:04d}.csv.part"
                partial.write_text(f"{k}\n")
                if k % 3 == 0:
                    os.utime(partial, ns=(10**18, 10**18))  # written in 2001
                os.replace(partial, home / "landing" / partial.stem)
                landed.append(partial.stem)
            result = tick(sensor, instance, home, cursor)
            cursor = result.cursor
            for request in result.run_requests:
                record_run(instance, request, dg.DagsterRunStatus.SUCCESS)  # the run ends at once
                served.append(request.partition_key)
    assert len(served) >= 28  # one a tick, from the second tick on
    assert served == landed[: len(served)]


def test_files_the_sensor_cannot_read_keep_no_place_and_are_picked_up_once_readable(home, monkeypatch, capfd):
    # Uploads another user left 0600 cannot be hashed. Three windows' worth of them landed first: the
    # files landing after them are still served, and the unreadable ones once they can be read.
    runs_per_tick = 2
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=runs_per_tick)
    window = sensors.WATCHED_TICKS * runs_per_tick
    cursor_cap = (sensors.IN_PROGRESS_TICKS + sensors.WATCHED_TICKS) * runs_per_tick
    locked = {land(home, f"a_{n:02d}.csv", f"{n}\n").name for n in range(3 * window)}
    time.sleep(0.05)  # a file system with a coarse clock could give the next file the same ctime
    hash_file = sensors.sha256_of_file

    def hashing(path: Path) -> str:
        if path.name in locked:  # root reads a 0600 file: the refusal is simulated
            raise PermissionError(13, "Permission denied")
        return hash_file(path)

    monkeypatch.setattr(sensors, "sha256_of_file", hashing)
    served: list[str] = []
    with dg.instance_for_test() as instance:
        cursor = None

        def ticks(count: int) -> None:
            nonlocal cursor
            for _ in range(count):
                result = tick(sensor, instance, home, cursor)
                cursor = result.cursor
                assert len(read_cursor(cursor)[0]) <= cursor_cap
                for request in result.run_requests:
                    record_run(instance, request, dg.DagsterRunStatus.SUCCESS)  # the run ends at once
                    served.append(request.partition_key)

        readable = []
        for n in range(8):  # one readable export lands every tick
            readable.append(land(home, f"b_{n}.csv", f"{n}\n").name)
            ticks(1)
        # The unreadable files are passed over a window at a time, then the others are served in order.
        assert served == readable[: len(served)] and len(served) >= 4
        ticks(3)
        assert served == readable
        # Someone fixes the permissions of a file not watched now (a new ctime): it is served next.
        fixed = min(locked - set(read_cursor(cursor)[0]))
        os.chmod(home / "landing" / fixed, 0o644)
        locked.remove(fixed)
        ticks(2)
        assert served[len(readable) :] == [fixed]
        # A lock on another one not watched now is released (nothing the scan sees changes): the line
        # comes round to it, as to every unreadable file in turn.
        released = min(locked - set(read_cursor(cursor)[0]))
        locked.remove(released)
        ticks(len(locked) // window + 2)
        assert served[len(readable) :] == [fixed, released]
    assert sorted(os.listdir(home / "landing")) == sorted(locked)
    logged = capfd.readouterr().err
    assert "'a_29.csv' skipped this tick: PermissionError [Errno 13] Permission denied" in logged


def test_a_tick_whose_time_is_up_leaves_the_other_files_to_the_next_with_what_it_learned(home, monkeypatch):
    import time

    from tm2_pipeline import sensors

    monkeypatch.setattr(sensors, "TICK_BUDGET_S", 0.5)  # a file already hashed takes far less
    hashed: list[str] = []
    real_hash = sensors.sha256_of_file

    def slow(path: Path) -> str:  # a large file
        hashed.append(path.name)
        time.sleep(1.0)
        return real_hash(path)

    monkeypatch.setattr(sensors, "sha256_of_file", slow)
    sensor = build_landing_sensor(interval_s=30, max_runs_per_tick=10)
    for name in ("a.csv", "b.csv", "c.csv"):
        land(home, name, name)
    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance, home).cursor  # seen: stable from the next tick
        requested = []
        for _ in range(3):
            result = tick(sensor, instance, home, cursor)
            requested.append(sorted({request.partition_key for request in result.run_requests}))
            cursor = result.cursor
    assert requested == [["a.csv"], ["a.csv", "b.csv"], ["a.csv", "b.csv", "c.csv"]]
    assert sorted(hashed) == ["a.csv", "b.csv", "c.csv"]  # each hashed once: kept in the cursor
