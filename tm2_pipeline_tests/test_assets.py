"""The four assets run by Dagster with swapped resources: a real test MongoDB server, the sandbox."""

import hashlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from tm2_pipeline.accepted_table import staged_tables, staging_path
from tm2_pipeline.pipeline_config import PipelineConfig
from tm2_pipeline.run_outcome import BLOCKED, REFUSED, SUCCEEDED, classify_run
from tm2_pipeline_tests.pipeline_runs import ALL_CHECKS, SAMPLE, error_messages, materialize_file, metadata_of

pytestmark = pytest.mark.integration

HEADER = "patient_id,tm2_code,condition_name,system_type,severity,diagnosis_date,practitioner_id\n"


def test_sample_goes_all_the_way_then_reruns_as_unchanged(pipeline_resources, tmp_path):
    mongo = pipeline_resources["mongo"]
    with dg.instance_for_test() as instance:
        first = materialize_file(SAMPLE, pipeline_resources, instance)
        assert first.success
        validated = metadata_of(first, "validated_tm2_records")
        assert (validated["rows"], validated["accepted"], validated["duplicates"], validated["rejected"]) == (
            102,
            96,
            2,
            4,
        )
        stored = metadata_of(first, "tm2_mongo_records")
        assert (stored["inserted"], stored["updated"], stored["unchanged"]) == (96, 0, 0)
        assert stored["skipped_unchanged_file"] is False
        submitted = metadata_of(first, "openmrs_submissions")
        assert submitted["submitted_this_run"] > 0
        checks = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
        assert checks == dict.fromkeys(ALL_CHECKS, True)

        assert metadata_of(first, "validated_tm2_records")["reused_earlier_validation"] is False

        second = materialize_file(SAMPLE, pipeline_resources, instance)
        assert second.success
        again = metadata_of(second, "validated_tm2_records")
        assert again["reused_earlier_validation"] is True  # same bytes, rules and day
        assert {k: again[k] for k in ("rows", "accepted", "duplicates", "rejected")} == {
            k: validated[k] for k in ("rows", "accepted", "duplicates", "rejected")
        }
        stored = metadata_of(second, "tm2_mongo_records")
        assert (stored["inserted"], stored["updated"], stored["unchanged"]) == (0, 0, 96)
        assert stored["skipped_unchanged_file"] is True
        assert metadata_of(second, "openmrs_submissions")["submitted_this_run"] == 0

    with mongo.process_config_and_initialize_cm() as store:
        assert store.records().count() == 96
        assert store.rejects().count() == 4
    home = Path(pipeline_resources["pipeline"].tm2_home)
    # The raw bytes are kept once, content-addressed; tables are Parquet under TM2_HOME.
    assert [p.name for p in (home / "files").iterdir()] == [first.asset_value("raw_tm2_file")["sha256"]]
    assert (home / "tables" / "validated_tm2_records" / "tm2_sample.csv.parquet").exists()


def test_staging_tables_of_ended_runs_are_removed_and_a_running_ones_kept(pipeline_resources):
    home = Path(pipeline_resources["pipeline"].tm2_home)
    table = home / "tables" / "validated_tm2_records" / f"{SAMPLE.name}.parquet"
    table.parent.mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test() as instance:
        running, failed = (
            instance.add_run(dg.DagsterRun(job_name="ingest_tm2_file", status=status))
            for status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.FAILURE)
        )
        for run_id in (running.run_id, failed.run_id, "0c6b1d0e-killed-before-the-instance-knew"):
            staging_path(table, run_id).write_bytes(b"half a table")
        result = materialize_file(SAMPLE, pipeline_resources, instance)
    assert result.success
    assert set(staged_tables(table)) == {running.run_id}
    assert table.exists()


def test_a_file_written_since_makes_the_rerun_compare_again(pipeline_resources, tmp_path):
    corrected = tmp_path / "corrected.csv"
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    # The same diagnosis as the sample's second row, with another severity: it updates that record.
    first_row = lines[2].split(",")
    first_row[4] = "Severe" if first_row[4] != "Severe" else "Mild"
    corrected.write_text(lines[0] + "\n" + ",".join(first_row) + "\n", encoding="utf-8")
    with dg.instance_for_test() as instance:
        assert materialize_file(SAMPLE, pipeline_resources, instance).success
        correction = materialize_file(corrected, pipeline_resources, instance)
        assert metadata_of(correction, "tm2_mongo_records")["updated"] == 1
        # The sample again: the later ingestion wins, so the one record changes back.
        rerun = metadata_of(materialize_file(SAMPLE, pipeline_resources, instance), "tm2_mongo_records")
    assert rerun["skipped_unchanged_file"] is False
    assert (rerun["inserted"], rerun["updated"], rerun["unchanged"]) == (0, 1, 95)


def test_refused_file_stops_at_raw_and_is_kept_in_failed(pipeline_resources, tmp_path):
    gz = tmp_path / "export.csv"
    gz.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)))
    with dg.instance_for_test() as instance:
        result = materialize_file(gz, pipeline_resources, instance)
        assert not result.success
        assert classify_run(instance, result.run_id, result.success).status == REFUSED
        assert result.asset_materializations_for_node("validated_tm2_records") == []
        errors_logged = error_messages(instance, result.run_id)
    failed = Path(pipeline_resources["pipeline"].tm2_home) / "failed"
    assert "compressed" in (failed / "export.csv.error.txt").read_text()
    assert gz.exists() and (failed / "export.csv").read_bytes() == gz.read_bytes()
    # Said in the run's log too (the terminal of tm2 ui), not only in the check and the note.
    assert any(message.startswith("export.csv refused (compressed") for message in errors_logged)
    with pipeline_resources["mongo"].process_config_and_initialize_cm() as store:
        assert store.records().count() == 0
        assert store.ingestions().latest_for_file("export.csv")["status"] == "refused"


def test_mostly_bad_file_is_blocked_before_the_store(pipeline_resources, tmp_path):
    bad = tmp_path / "wrong_file.csv"
    bad.write_text(
        HEADER + "P1,SK00,x,Ayurveda,Mild,2024-01-01,D1\n" + "P2,XX99,x,Ayurveda,Mild,2024-01-01,D1\n" * 3
    )
    with dg.instance_for_test() as instance:
        result = materialize_file(bad, pipeline_resources, instance)
        outcome = classify_run(instance, result.run_id, result.success)
        assert outcome.status == BLOCKED
        # Says which setting to change, not only which check failed.
        assert outcome.error.startswith("blocking check reject_rate: 3 of 4 rows rejected (75.0%), above")
        assert "TM2_REJECT_BLOCK=0.5" in outcome.error
        logged = error_messages(instance, result.run_id)
        assert (
            f"wrong_file.csv blocked: {outcome.error.removeprefix('blocking check reject_rate: ')}" in logged
        )
        assert result.asset_materializations_for_node("tm2_mongo_records") == []
    with pipeline_resources["mongo"].process_config_and_initialize_cm() as store:
        assert store.records().count() == 0
        assert store.rejects().count() == 3  # quarantined even though the file was blocked


def test_header_only_file_succeeds_with_zeros(pipeline_resources, tmp_path):
    empty_rows = tmp_path / "no_rows.csv"
    empty_rows.write_text(HEADER)
    with dg.instance_for_test() as instance:
        result = materialize_file(empty_rows, pipeline_resources, instance)
        assert classify_run(instance, result.run_id, result.success).status == SUCCEEDED
        assert metadata_of(result, "validated_tm2_records")["rows"] == 0
        assert metadata_of(result, "tm2_mongo_records")["inserted"] == 0


def test_a_runaway_quote_far_down_is_refused_by_validation_not_failed(pipeline_resources, tmp_path):
    broken = tmp_path / "runaway.csv"
    good_row = "P1,SK00,x,Ayurveda,Mild,2024-01-01,D1\n"
    # The header and the first rows are fine; a quote opened far down never closes.
    broken.write_text(
        HEADER + good_row * 50 + 'P2,SK00,"never closed,Ayurveda,Mild,2024-01-01,D1\n' + "x" * 200_000
    )
    sha256 = hashlib.sha256(broken.read_bytes()).hexdigest()
    with pipeline_resources["mongo"].process_config_and_initialize_cm() as store:
        # Rows quarantined from these very bytes earlier (say, under older rules).
        quarantined = [{"row": 3, "values": {"patient_id": "P1"}, "reasons": []}]
        store.rejects().replace_for_file("runaway.csv", sha256, "runaway.csv", quarantined, datetime.now(UTC))
    with dg.instance_for_test() as instance:
        result = materialize_file(broken, pipeline_resources, instance)
        outcome = classify_run(instance, result.run_id, result.success)
    assert outcome.status == REFUSED and outcome.error.startswith("malformed")
    failed = Path(pipeline_resources["pipeline"].tm2_home) / "failed"
    assert "malformed" in (failed / "runaway.csv.error.txt").read_text()
    with pipeline_resources["mongo"].process_config_and_initialize_cm() as store:
        assert store.records().count() == 0
        assert store.rejects().for_file(sha256) == []  # a file refused as a whole has no rejected rows


def test_the_same_bytes_validated_on_a_later_day_are_stored_again(pipeline_resources, tmp_path, monkeypatch):
    # Tomorrow's row is rejected today (future date) and accepted tomorrow: tomorrow's run must
    # store it, although neither the bytes nor the store have changed since today's run.
    today = pipeline_resources["pipeline"].today()
    tomorrow = today + timedelta(days=1)
    export = tmp_path / "export.csv"
    export.write_text(
        HEADER
        + "MRN-01001,SK01,Headache,Ayurveda,Mild,2024-01-15,HPR-1\n"
        + f"MRN-01002,SK01,Headache,Ayurveda,Mild,{tomorrow.isoformat()},HPR-1\n",
        encoding="utf-8",
    )
    assets = ["validated_tm2_records", "tm2_mongo_records"]
    with dg.instance_for_test() as instance:
        first = materialize_file(export, pipeline_resources, instance)
        assert [metadata_of(first, asset)["dagster/row_count"] for asset in assets] == [1, 1]
        monkeypatch.setattr(PipelineConfig, "today", lambda self: tomorrow)
        second = materialize_file(export, pipeline_resources, instance)
    assert second.success
    stored = metadata_of(second, "tm2_mongo_records")
    assert (stored["skipped_unchanged_file"], stored["inserted"], stored["unchanged"]) == (False, 1, 1)
    with pipeline_resources["mongo"].process_config_and_initialize_cm() as store:
        assert store.records().count() == 2 and store.rejects().count() == 0


def test_stored_once_fails_when_records_the_store_counted_are_not_in_mongodb(pipeline_resources, monkeypatch):
    from tm2_pipeline.store.records import RecordStore, StoreCounts

    def acknowledged_but_lost(self, accepted, *, file_name, sha256, now, on_wait=None, run_id=None):
        rows = sum(len(frame) for frame in accepted)
        return StoreCounts(inserted=rows)  # counts that add up, nothing written

    monkeypatch.setattr(RecordStore, "store", acknowledged_but_lost)
    with dg.instance_for_test() as instance:
        result = materialize_file(SAMPLE, pipeline_resources, instance)
    check = {e.check_name: e for e in result.get_asset_check_evaluations()}["stored_once"]
    assert not check.passed
    assert check.metadata["sampled_keys_in_mongodb"].value == 0 < check.metadata["sampled_keys"].value


@pytest.mark.parametrize(
    ("fault", "failing"),
    [
        (lambda records: records.iloc[1:], {"row_accounting"}),  # a row lost on the way to the table
        (lambda records: pd.concat([records, records.iloc[:1]]), {"row_accounting", "unique_record_keys"}),
    ],
    ids=["lost_row", "repeated_key"],
)
def test_the_validated_checks_fail_and_block_when_the_table_does_not_hold_the_counted_rows(
    pipeline_resources, monkeypatch, fault, failing
):
    from tm2_pipeline.accepted_table import AcceptedTableWriter

    write = AcceptedTableWriter.write
    monkeypatch.setattr(AcceptedTableWriter, "write", lambda self, records: write(self, fault(records)))
    with dg.instance_for_test() as instance:
        result = materialize_file(SAMPLE, pipeline_resources, instance)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert {name for name, passed in checks.items() if not passed} == failing
    assert not result.success  # blocking: nothing reaches the store
    assert "tm2_mongo_records" not in {
        e.asset_key.path[-1] for e in result.get_asset_materialization_events()
    }


def test_a_store_waits_for_another_files_turn_and_says_so_in_the_run_log(pipeline_resources):
    from tm2_pipeline.store.store_turns import TURN_ID, StoreTurns
    from tm2_pipeline_tests.store_turn_helpers import wait_until_in_line

    with pipeline_resources["mongo"].process_config_and_initialize_cm() as mongo:
        db = mongo.database()
        other = StoreTurns(db)
        other._take("other-clinic.csv", "other-clinic.csv:0", None)  # another file's store, writing

        def other_ends_after_our_store_waits() -> str | None:
            wait_until_in_line(db, SAMPLE.name, timeout_s=120)
            [waiting] = db["tm2_meta"].find_one({"_id": TURN_ID})["line"]
            other._give_up()
            return waiting["run"]  # the run whose step retry may resume the place

        with ThreadPoolExecutor(1) as pool, dg.instance_for_test() as instance:
            ending = pool.submit(other_ends_after_our_store_waits)
            result = materialize_file(SAMPLE, pipeline_resources, instance)
            waiting_run = ending.result(timeout=60)
            messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
        assert result.success and waiting_run == result.run_id
        assert (
            "waiting for the store of other-clinic.csv to finish (if it was stopped, its turn is taken over"
            " 2 minutes after its last sign of life)" in messages
        )
        assert metadata_of(result, "tm2_mongo_records")["inserted"] == 96
        assert db["tm2_meta"].find_one({"_id": TURN_ID})["holder"] is None  # given up after
