"""`tm2` from the outside: exit codes, JSON lines, refusals, dry runs, status and rejects."""

import gzip
import json
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pymongo
import pytest
from click.testing import CliRunner

from tm2_pipeline.cli import main

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "tm2_sample.csv"
JSON_KEYS = {
    "file",
    "sha256",
    "rows",
    "accepted",
    "duplicates",
    "rejected",
    "inserted",
    "updated",
    "unchanged",
    "not_in_this_version",
    "submitted",
    "in_openmrs",
    "submission_failed",
    "needs_a_person",
    "status",
}
HEADER = [
    "patient_id",
    "tm2_code",
    "condition_name",
    "system_type",
    "severity",
    "diagnosis_date",
    "practitioner_id",
]


@pytest.fixture
def env(tmp_path, secantus_uri, monkeypatch) -> dict[str, str]:
    database = f"cli_{uuid.uuid4().hex[:10]}"
    values = {
        "TM2_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "MONGODB_URI": secantus_uri,
        "TM2_MONGODB_DB": database,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return values


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines()]


@contextmanager
def openmrs_over_http(monkeypatch, password: str = "Admin123") -> Iterator:
    """The emulator served on 127.0.0.1 as the configured OpenMRS (admin / Admin123); yields it."""
    from tm2_pipeline.openmrs.emulator.server import SandboxServer, open_sandbox

    with open_sandbox(None) as sandbox, SandboxServer(sandbox) as server:
        monkeypatch.setenv("OPENMRS_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENMRS_USERNAME", "admin")
        monkeypatch.setenv("OPENMRS_PASSWORD", password)
        yield sandbox


def record_count(env) -> int:
    client = pymongo.MongoClient(env["MONGODB_URI"])
    try:
        return client[env["TM2_MONGODB_DB"]]["tm2_records"].count_documents({})
    finally:
        client.close()


def status_counts_needing_a_person(env) -> int:
    client = pymongo.MongoClient(env["MONGODB_URI"])
    try:
        log = client[env["TM2_MONGODB_DB"]]["openmrs_submissions"]
        return log.count_documents({"state": {"$in": ["ambiguous_patient", "rejected_by_server"]}})
    finally:
        client.close()


def test_missing_file_is_a_usage_error(env):
    result = run("ingest", "does-not-exist.csv")
    assert result.exit_code == 2
    assert "does-not-exist.csv" in result.stderr


def test_ingest_json_then_rerun_is_unchanged_and_status_and_rejects(env):
    first = run("ingest", str(SAMPLE), "--json")
    assert first.exit_code == 0, first.stderr
    [report] = json_lines(first.stdout)  # stdout holds only the JSON line
    assert set(report) == JSON_KEYS
    assert report["status"] == "succeeded"
    assert (report["rows"], report["accepted"], report["duplicates"], report["rejected"]) == (102, 96, 2, 4)
    assert (report["inserted"], report["updated"], report["unchanged"]) == (96, 0, 0)
    assert report["submitted"] > 0
    # Every accepted record shows up in one of the three OpenMRS counts (the sample has an ambiguous patient).
    assert report["submitted"] + report["submission_failed"] + report["needs_a_person"] == 96
    assert report["in_openmrs"] == report["submitted"]  # nothing was there before
    assert report["needs_a_person"] == status_counts_needing_a_person(env)
    assert "embedded store" not in first.stderr  # MONGODB_URI is set
    assert "OpenMRS sandbox" in first.stderr

    [again] = json_lines(run("ingest", str(SAMPLE), "--json").stdout)
    assert (again["inserted"], again["updated"], again["unchanged"], again["submitted"]) == (0, 0, 96, 0)
    # Nothing sent again, and still every record accounted for: the ones sent before are counted.
    assert again["in_openmrs"] == report["submitted"]
    assert again["in_openmrs"] + again["submission_failed"] + again["needs_a_person"] == 96
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        # In-process: the run monitor's time limit could not stop it, only free its file name.
        runs = instance.get_runs()
        assert len(runs) == 2 and all(run.tags["dagster/max_runtime"] == "0" for run in runs)

    status = json.loads(run("status", "--json").stdout)
    assert set(status) == {"records", "rejects", "submissions", "files"}
    assert status["records"] == 96 and status["rejects"] == 4
    assert sum(status["submissions"].values()) == 96
    assert status["files"][0]["file"] == "tm2_sample.csv" and status["files"][0]["status"] == "succeeded"
    # Some records are not in OpenMRS (an ambiguous patient, patients not found): said where to look.
    assert "the records not in OpenMRS, and why: tm2 submissions" in run("status").stdout

    rejects = json_lines(run("rejects", "tm2_sample.csv", "--json").stdout)
    assert [r["row"] for r in rejects] == [13, 34, 58, 79]
    assert {reason["check"] for r in rejects for reason in r["reasons"]} == {
        "tm1_code",
        "unknown_code",
        "excel_mangled_id",
        "future_date",
    }
    assert all("values" not in r for r in rejects)  # raw values (patient ids) only on request
    with_values = json_lines(run("rejects", "tm2_sample.csv", "--json", "--with-values").stdout)
    patient_ids = [r["values"]["patient_id"] for r in with_values]
    assert len(patient_ids) == 4 and all(patient_ids)
    text = run("rejects", "tm2_sample.csv").stdout
    assert text.startswith("row 13: ") and not any(patient_id in text for patient_id in patient_ids)
    text_with_values = run("rejects", "tm2_sample.csv", "--with-values").stdout
    assert all(patient_id in text_with_values for patient_id in patient_ids)  # it printed none before
    assert run("rejects", "never-seen.csv").exit_code == 1


def test_refusals_are_specific_and_store_nothing(env, tmp_path):
    files = {
        "empty.csv": b"",
        "binary.csv": bytes(range(256)) * 4,
        "zipped.csv": gzip.compress(SAMPLE.read_bytes()),
        "columns.csv": b"patient_id,tm2_code,diagnosis\nP1,SK00,2024-01-01\n",
    }
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    result = run("ingest", *paths, "--json")
    assert result.exit_code == 1
    reports = {r["file"]: r for r in json_lines(result.stdout)}
    assert all(r["status"] == "refused" and r["rows"] == 0 and r["inserted"] == 0 for r in reports.values())
    assert "empty" in reports["empty.csv"]["error"]
    assert "binary" in reports["binary.csv"]["error"]
    assert "compressed" in reports["zipped.csv"]["error"]
    missing = reports["columns.csv"]["error"]
    assert "condition_name" in missing and "diagnosis_date" in missing and "diagnosis" in missing
    assert "Traceback" not in result.stderr
    assert record_count(env) == 0
    assert (Path(env["TM2_HOME"]) / "failed" / "zipped.csv.error.txt").exists()


def test_excel_exports_utf16_tab_and_cp1252_semicolon(env, tmp_path):
    rows = [HEADER, ["MRN-1", "sk00", "Cephalalgia – café", "ayurveda", "mod.", "15/01/2024", "D-1"]]
    (tmp_path / "unicode.txt").write_bytes("\r\n".join("\t".join(r) for r in rows).encode("utf-16"))
    (tmp_path / "latin.csv").write_bytes("\r\n".join(";".join(r) for r in rows).encode("cp1252"))
    result = run("ingest", str(tmp_path / "unicode.txt"), str(tmp_path / "latin.csv"), "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    first, second = json_lines(result.stdout)
    assert (first["accepted"], first["inserted"]) == (1, 1)
    assert (second["accepted"], second["inserted"], second["unchanged"]) == (1, 0, 1)  # same record
    client = pymongo.MongoClient(env["MONGODB_URI"])
    [doc] = client[env["TM2_MONGODB_DB"]]["tm2_records"].find()
    client.close()
    assert (doc["tm2_code"], doc["severity"], doc["diagnosis_date"]) == ("SK00", "Moderate", "2024-01-15")
    assert doc["condition_name"] == "Cephalalgia – café"


def test_dry_run_writes_nothing_anywhere(env):
    result = run("ingest", str(SAMPLE), "--dry-run", "--json")
    assert result.exit_code == 0
    [report] = json_lines(result.stdout)
    assert (report["accepted"], report["rejected"], report["inserted"]) == (96, 4, 0)
    assert not Path(env["TM2_HOME"]).exists() and not Path(env["DAGSTER_HOME"]).exists()
    assert record_count(env) == 0


def test_dry_run_refuses_a_file_name_the_real_ingest_refuses(env, tmp_path):
    named = tmp_path / "clinic,march.csv"
    named.write_bytes(SAMPLE.read_bytes())
    results = [run("ingest", str(named), "--json", *flags) for flags in (["--dry-run"], [])]
    reports = [json_lines(result.stdout)[0] for result in results]
    assert [(r["status"], r["error"]) for r in reports] == [(reports[1]["status"], reports[1]["error"])] * 2
    assert reports[0]["status"] == "refused" and "rename it without commas" in reports[0]["error"]


def test_a_mongodb_uri_only_the_driver_can_judge_is_one_clear_line(env, monkeypatch):
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:99999/")  # no such port
    status = run("status")
    assert status.exit_code == 1
    message = "MONGODB_URI is not a valid MongoDB URI (ValueError)"
    assert (status.stdout + status.stderr).strip() == f"error: {message}"
    [line] = json_lines(run("ingest", str(SAMPLE), "--json").stdout)
    assert line["status"] == "failed"
    assert line["error"] == f"resources: {message}"
    assert "Traceback" not in line["error"] and "99999" not in line["error"]
    # From a review: the failed run looked "about to be retried" by a daemon (none runs here), and
    # held its file name for 10 minutes. The setting fixed, the file runs at once.
    monkeypatch.setenv("MONGODB_URI", env["MONGODB_URI"])
    [again] = json_lines(run("ingest", str(SAMPLE), "--json").stdout)
    assert again["status"] == "succeeded", again.get("error")


@pytest.mark.parametrize("command", ["ui", "openmrs-sandbox"])
def test_a_busy_port_is_one_clear_line_before_anything_starts(env, command):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run(command, "--port", str(busy.getsockname()[1]))
    assert result.exit_code == 1
    assert "is in use" in result.stderr and "Traceback" not in result.stderr
    assert not Path(env["DAGSTER_HOME"]).exists()  # nothing was started or prepared


def test_status_says_which_store_answered(env):
    result = run("status")
    assert result.exit_code == 0
    host_port = env["MONGODB_URI"].split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    assert result.stdout.splitlines()[0] == f"store: {host_port}, database {env['TM2_MONGODB_DB']}"


def test_a_blocked_file_names_the_setting_in_a_dry_run_and_a_real_ingest(env, tmp_path):
    mostly_bad = tmp_path / "mostly_bad.csv"
    rows = ["P1,SK00,x,Ayurveda,Mild,2024-01-01,D1"] + ["P2,XX99,x,Ayurveda,Mild,2024-01-01,D1"] * 3
    mostly_bad.write_text("\n".join([",".join(HEADER), *rows]) + "\n")
    results = [run("ingest", str(mostly_bad), "--json", *flags) for flags in (["--dry-run"], [])]
    reports = [json_lines(result.stdout)[0] for result in results]
    assert [report["status"] for report in reports] == ["blocked", "blocked"]
    share = "3 of 4 rows rejected (75.0%), above TM2_REJECT_BLOCK=0.5"
    # A dry run stored no rejects (from a review: it pointed to tm2_rejects all the same).
    assert reports[0]["error"].startswith(f"{share}: the file would be blocked before the store")
    assert "a dry run writes nothing" in reports[0]["error"]
    assert reports[1]["error"] == (
        f"blocking check reject_rate: {share}: the file is blocked before the store (its rejected rows "
        "are in tm2_rejects with their reasons)"
    )
    assert len(json_lines(run("rejects", "mostly_bad.csv", "--json").stdout)) == 3


def test_a_file_name_with_a_run_under_way_is_not_run_a_second_time_at_once(env, tmp_path):
    # The sensor's run of clinic.csv (queued or running): an in-process run would share its tables.
    import dagster as dg
    from dagster._core.test_utils import create_run_for_test

    from tm2_pipeline.ingestion import prepare_dagster_home
    from tm2_pipeline.settings import load_settings

    landed = tmp_path / "clinic.csv"
    landed.write_bytes(SAMPLE.read_bytes())
    prepare_dagster_home(load_settings())
    with dg.DagsterInstance.get() as instance:
        running = create_run_for_test(
            instance,
            job_name="ingest_tm2_file",
            tags={"dagster/partition": "clinic.csv"},
            status=dg.DagsterRunStatus.STARTED,
        )
    result = run("ingest", str(landed), "--json")
    assert result.exit_code == 1
    [report] = json_lines(result.stdout)
    assert report["status"] == "failed"
    assert report["error"] == (
        f"a run of clinic.csv is under way or about to be retried (run {running.run_id}, started): "
        "try again when it has ended, or cancel it in the Dagster UI"
    )
    assert record_count(env) == 0


def test_an_instance_seeded_with_an_older_dagster_yaml_is_pointed_out_not_overwritten(env):
    from tm2_pipeline.ingestion import instance_config_is_outdated, prepare_dagster_home
    from tm2_pipeline.settings import load_settings

    home = prepare_dagster_home(load_settings())
    assert not instance_config_is_outdated(home)
    older = "storage:\n  sqlite:\n    base_dir:\n      env: DAGSTER_HOME\n"
    (home / "dagster.yaml").write_text(older)
    prepare_dagster_home(load_settings())
    assert (home / "dagster.yaml").read_text() == older  # the user's copy is never replaced
    assert instance_config_is_outdated(home)


def test_a_refused_openmrs_login_reports_every_record_left_for_the_nightly_retry(env, monkeypatch):
    with openmrs_over_http(monkeypatch, password="not-the-password"):
        result = run("ingest", str(SAMPLE), "--json")
    [report] = json_lines(result.stdout)
    assert result.exit_code == 1 and report["status"] == "failed"
    assert report["accepted"] > 0 and report["submission_failed"] == report["accepted"]
    assert f"{report['accepted']} of these records wait for a later run" in report["error"]
    assert "not-the-password" not in result.stdout


def test_rejects_of_a_refused_file_says_why_and_of_a_clean_file_says_none(env, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert run("ingest", str(empty)).exit_code == 1
    refused = run("rejects", "empty.csv")
    assert refused.exit_code == 1 and refused.stdout == ""
    assert refused.stderr.startswith("empty.csv was refused as a whole, so no row was read: ")

    clean = tmp_path / "clean.csv"
    clean.write_text("\n".join(SAMPLE.read_text(encoding="utf-8").splitlines()[:3]) + "\n", encoding="utf-8")
    assert run("ingest", str(clean)).exit_code == 0
    none = run("rejects", "clean.csv", "--json")
    assert none.exit_code == 0 and none.stdout == ""  # JSON lines: none
    assert "clean.csv: no rejected rows in its latest ingestion (succeeded)" in none.stderr


def test_the_embedded_store_commands_on_a_home_never_used(env, tmp_path, monkeypatch):
    # A fresh clone: TM2_HOME does not exist yet. Nothing to stop, nothing created, no traceback.
    home = tmp_path / "home"
    assert run("store", "stop").output == "embedded store: was not running\n"
    assert run("store", "status").output == "embedded store: not running\n"
    # From a review: run from another folder, `tm2 rejects` started a new, empty store there and
    # answered "never ingested" for a file ingested elsewhere.
    monkeypatch.delenv("MONGODB_URI")
    for command in (["status"], ["rejects", "clinic.csv"], ["submissions"]):
        result = run(*command)
        assert result.exit_code == 1
        assert result.stderr.startswith(f"error: nothing was ever ingested with TM2_HOME={home} ")
        (home / "landing").mkdir(parents=True, exist_ok=True)  # as `tm2 ui` leaves it: still unused
    assert not (home / "mongo").exists()


def test_ui_creates_the_landing_dir_and_says_where_it_is(env, tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(
        "tm2_pipeline.foreground.run_in_foreground", lambda command: started.append(command) or 0
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRunner().invoke(main, ["ui", "--port", str(port)])
    landing = tmp_path / "home" / "landing"
    assert result.exit_code == 0 and landing.is_dir()
    assert f"files dropped into {landing} are ingested by the landing sensor" in result.output
    assert started and started[0][2:4] == ["dagster", "dev"]


def test_a_refused_login_after_a_good_run_still_counts_the_records_already_in_openmrs(env, monkeypatch):
    # From a review: the report's in_openmrs came from the materialization only, so a failed
    # OpenMRS step said "in OpenMRS 0" for records an earlier run had sent.
    with openmrs_over_http(monkeypatch):
        [first] = json_lines(run("ingest", str(SAMPLE), "--json").stdout)
        monkeypatch.setenv("OPENMRS_PASSWORD", "not-the-password")
        refused = run("ingest", str(SAMPLE), "--json")
        text = run("ingest", str(SAMPLE)).stdout
    [report] = json_lines(refused.stdout)
    assert first["status"] == "succeeded" and first["in_openmrs"] > 0
    assert refused.exit_code == 1 and report["status"] == "failed"
    counts = ("in_openmrs", "submission_failed", "needs_a_person")
    assert [report[name] for name in counts] == [first[name] for name in counts]
    assert sum(report[name] for name in counts) == report["accepted"]
    assert f"OpenMRS: in OpenMRS {first['in_openmrs']} (sent by this run 0)" in text


def test_a_run_left_by_a_killed_tm2_ingest_no_longer_blocks_its_file_name(env, tmp_path):
    # From a crash audit: `kill -9` of tm2 ingest left its in-process run "started" for ever, and
    # every later `tm2 ingest` of the name was refused as under way.

    import dagster as dg
    from dagster._core.test_utils import create_run_for_test

    from tm2_pipeline.abandoned_runs import RUN_PROCESS_TAG, tag_for, this_process
    from tm2_pipeline.ingestion import prepare_dagster_home
    from tm2_pipeline.settings import load_settings
    from tm2_pipeline_tests.process_groups import ended_process_identity

    landed = tmp_path / "clinic.csv"
    landed.write_bytes(SAMPLE.read_bytes())
    prepare_dagster_home(load_settings())

    def left_started(name: str, where: str | None) -> dg.DagsterRun:
        run_id = str(uuid.uuid4())
        process = this_process(run_id) if where is None else tag_for(run_id, where)
        return create_run_for_test(
            instance,
            job_name="ingest_tm2_file",
            run_id=run_id,
            tags={"dagster/partition": name, RUN_PROCESS_TAG: process},
            status=dg.DagsterRunStatus.STARTED,
        )

    with dg.DagsterInstance.get() as instance:
        killed = left_started("clinic.csv", ended_process_identity())
        alive = left_started("alive.csv", None)  # a tm2 ingest still running it
        elsewhere = left_started("other-host.csv", "another-host:-:-:1:1")  # cannot be told: left alone
    [report] = json_lines(run("ingest", str(landed), "--json").stdout)
    assert report["status"] == "succeeded" and report["inserted"] == 96
    for name, blocker in (("alive.csv", alive), ("other-host.csv", elsewhere)):
        other = tmp_path / name
        other.write_bytes(SAMPLE.read_bytes())
        [refused] = json_lines(run("ingest", str(other), "--json").stdout)
        assert refused["status"] == "failed" and blocker.run_id in refused["error"]
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.CANCELED
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED


def test_a_person_lists_what_waits_fixes_it_and_sends_it_again(env, monkeypatch):
    # Without `tm2 ui` nothing runs the nightly retry, and records waiting for a person were sent
    # again only when their content changed: `tm2 submissions` and `tm2 retry [--release]`.
    with openmrs_over_http(monkeypatch) as sandbox:
        [report] = json_lines(run("ingest", str(SAMPLE), "--json").stdout)
        assert report["needs_a_person"] == 1

        listed = run("submissions", "--state", "ambiguous_patient", "--json")
        [waiting] = json_lines(listed.stdout)
        assert (waiting["file"], waiting["last_attempt"]["message"]) == (
            "tm2_sample.csv",
            "2 patients carry this identifier",
        )
        assert "patient_id" not in waiting and "key" not in waiting  # the key gives the id back
        [shown] = json_lines(
            run("submissions", "--state", "ambiguous_patient", "--json", "--with-values").stdout
        )
        patient_id = shown["patient_id"]
        assert patient_id not in listed.stdout + listed.stderr
        assert "1 records (ambiguous_patient); once the cause is fixed" in listed.stderr

        plain = run("retry")
        assert plain.exit_code == 0 and "OpenMRS retry  [succeeded]" in plain.stdout
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            [retry_run] = instance.get_runs(dg.RunsFilter(job_name="openmrs_retry"))
        # Named, so that a killed `tm2 retry` is ended by the next look, not left "started".
        assert retry_run.tags["tm2/run_process"].startswith(retry_run.run_id + " ")
        assert retry_run.tags["dagster/max_retries"] == "0"  # the terminal's, no daemon's
        assert status_counts_needing_a_person(env) == 1  # still waiting: nobody released it

        # The person voids the duplicate patient in OpenMRS, then releases what waited for them.
        kept, duplicate = sandbox.state.find_patients(patient_id)
        duplicate["voided"] = True
        before = sandbox.state.live_conditions()
        released = run("retry", "--release", "--json")
        [outcome] = json_lines(released.stdout)
        conditions = sandbox.state.live_conditions()
        again = json_lines(run("retry", "--release", "--json").stdout)[0]
        after = sandbox.state.live_conditions()

    assert released.exit_code == 0 and outcome["status"] == "succeeded"
    assert outcome["released"] == 1 + report["submission_failed"]  # and the patients not found yet
    assert outcome["needs_a_person"] == 0 and status_counts_needing_a_person(env) == 0
    assert outcome["in_openmrs"] == 1 and outcome["submitted"] == 1
    assert len(before) == report["in_openmrs"]
    [new] = [c for c in conditions if c not in before]
    assert new["patient"] == kept["uuid"] and len(after) == len(conditions) == len(before) + 1
    assert again["submitted"] == 0  # each record once, however often it is released
    assert not json_lines(run("submissions", "--state", "ambiguous_patient", "--json").stdout)


def test_a_correction_says_what_it_left_behind_from_the_version_before(env, tmp_path):
    # From a review: a corrected date and a removed row left two records of the first version in
    # MongoDB and OpenMRS without a word (a correction adds and updates, never retracts).
    header = ",".join(HEADER)
    first, second = tmp_path / "v1", tmp_path / "v2"
    first.mkdir(), second.mkdir()
    (first / "clinicA.csv").write_text(
        f"{header}\nMRN-01004,SS53,a,Ayurveda,Mild,2025-01-01,HPR-1\n"
        "MRN-01005,ST06,y,Siddha,Moderate,2025-01-05,HPR-2\nMRN-01007,SR82,z,Unani,Severe,2025-02-01,HPR-3\n"
    )
    (second / "clinicA.csv").write_text(
        f"{header}\nMRN-01004,SS53,a,Ayurveda,Severe,2025-01-01,HPR-1\n"
        "MRN-01007,SR82,z,Unani,Severe,2025-02-10,HPR-3\n"
    )
    [original] = json_lines(run("ingest", str(first / "clinicA.csv"), "--json").stdout)
    corrected = run("ingest", str(second / "clinicA.csv"))
    [again] = json_lines(run("ingest", str(second / "clinicA.csv"), "--json").stdout)
    assert original["not_in_this_version"] == 0
    assert (
        "note: 2 records stored from other versions of this file name are not in this one" in corrected.stdout
    )
    assert again["not_in_this_version"] == 2 and again["status"] == "succeeded"  # a warning, not a failure
    assert record_count(env) == 4  # the date's correction is a new record: nothing was retracted
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        latest = instance.get_runs(limit=1)[0]
        [evaluation] = [
            entry.dagster_event.event_specific_data
            for entry in instance.all_logs(latest.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
            if entry.dagster_event.event_specific_data.check_name == "other_versions_covered"
        ]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    shown = evaluation.metadata["first_of_them"].value
    assert sorted(shown.split(", ")) == [
        f"{original['sha256'][:12]} row 2",
        f"{original['sha256'][:12]} row 3",
    ]
    assert "MRN-" not in shown
