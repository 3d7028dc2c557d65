"""Ctrl-C on the real `tm2 ingest` (SIGINT to its whole process group, as from a terminal): one line,
no traceback from Dagster's log-capture helpers, none of them left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psutil
import pymongo
import pytest
import yaml
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._core.storage.noop_compute_log_manager import NoOpComputeLogManager

from bench.generate import generate_tm2_csv
from bench.stages import sandbox_patient_ids
from tm2_pipeline.abandoned_runs import FINISHED_TAG, is_abandoned, own_tag
from tm2_pipeline.compute_logs import QuietLocalComputeLogManager, in_process_instance
from tm2_pipeline.definitions import build_definitions
from tm2_pipeline.identity import condition_uuid
from tm2_pipeline.ingestion import REPO_DAGSTER_YAML, Ingestor, prepare_dagster_home
from tm2_pipeline.openmrs.emulator.faults import FaultConfig
from tm2_pipeline.openmrs.emulator.server import SandboxServer, open_sandbox
from tm2_pipeline.settings import load_settings
from tm2_pipeline_tests.process_groups import group_members

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "tm2_sample.csv"


def command_names(processes: list[psutil.Process]) -> set[str]:
    names = set()
    for process in processes:
        try:
            names.update(Path(part).name for part in process.cmdline()[:2])
        except psutil.Error:
            continue
    return names


def wait_for_records_in_flight(tm2: subprocess.Popen, uri: str, database: str) -> None:
    """Until the run has marked records `in_flight`: its submission to OpenMRS is under way."""
    client: pymongo.MongoClient = pymongo.MongoClient(uri)
    try:
        deadline = time.monotonic() + 25
        while client[database]["openmrs_submissions"].count_documents({"state": "in_flight"}) == 0:
            if tm2.poll() is not None or time.monotonic() > deadline:
                output, errors = tm2.communicate()
                pytest.fail(f"no submission under way (exit {tm2.returncode}): {output!r} {errors!r}")
            time.sleep(0.1)
    finally:
        client.close()


@contextmanager
def slow_openmrs_and_env(
    tmp_path: Path, secantus_uri: str
) -> Iterator[tuple[dict[str, str], str, SandboxServer]]:
    """The environment `tm2 ingest` runs in (its own homes and database), against a sandbox that
    takes 300 ms an answer: the sample's submission takes seconds, so a signal lands while it runs.
    Yields the environment, the database's name and the sandbox's server."""
    database = f"cli_{uuid.uuid4().hex[:10]}"
    with (
        open_sandbox(None, faults=FaultConfig(latency_ms=300)) as sandbox,
        SandboxServer(sandbox) as server,
    ):
        yield (
            {
                **os.environ,
                "TM2_HOME": str(tmp_path / "home"),
                "DAGSTER_HOME": str(tmp_path / "dagster"),
                "MONGODB_URI": secantus_uri,
                "TM2_MONGODB_DB": database,
                "OPENMRS_BASE_URL": server.base_url,
                "OPENMRS_USERNAME": "admin",
                "OPENMRS_PASSWORD": "Admin123",
            },
            database,
            server,
        )


@pytest.mark.integration
def test_ctrl_c_during_a_submission_prints_one_line_and_leaves_no_helper_process(
    tmp_path: Path, secantus_uri: str
) -> None:
    with slow_openmrs_and_env(tmp_path, secantus_uri) as (env, database, _):
        tm2 = subprocess.Popen(
            [sys.executable, "-m", "tm2_pipeline.cli", "ingest", str(SAMPLE), "--json"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
        try:
            wait_for_records_in_flight(tm2, secantus_uri, database)
            # Dagster's compute-log capture is running: `tail -F` and its orphan watcher, twice.
            assert {"tail", "watch_orphans.py"} <= command_names(group_members(tm2.pid))
            os.killpg(tm2.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
            output, errors = tm2.communicate(timeout=30)
        finally:
            if tm2.poll() is None:
                os.killpg(tm2.pid, signal.SIGKILL)
                tm2.wait()

    assert tm2.returncode == 1
    [report] = [json.loads(line) for line in output.splitlines()]
    assert report["status"] == "failed"
    assert report["error"].startswith(
        "openmrs_submissions: interrupted (stopped by SIGINT): stopped sending;"
    )
    assert "Traceback" not in errors and "KeyboardInterrupt" not in errors, errors
    assert errors.splitlines()[-1] == "ingesting tm2_sample.csv ..."  # nothing after it
    assert group_members(tm2.pid) == []  # no tail or watcher left behind


@pytest.mark.integration
def test_after_a_kill_9_during_a_submission_the_next_tm2_ingest_runs_and_completes_it(
    tmp_path: Path, secantus_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # From a crash audit: the killed process's run stayed "started" for ever, and every later
    # `tm2 ingest` of the file was refused as under way (no run monitor watches in-process runs).
    with slow_openmrs_and_env(tmp_path, secantus_uri) as (env, database, _):
        command = kill_9_during_a_submission(env, tmp_path, database)
        again = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False
        )

    [report] = [json.loads(line) for line in again.stdout.splitlines()]
    assert again.returncode == 0 and report["status"] == "succeeded", again.stdout + again.stderr
    assert (report["accepted"], report["inserted"] + report["unchanged"]) == (96, 96)
    assert report["in_openmrs"] + report["submission_failed"] + report["needs_a_person"] == 96
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])  # its dagster.yaml names it
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        statuses = sorted(run.status.value for run in instance.get_runs())
    assert statuses == ["CANCELED", "SUCCESS"]


def kill_9_during_a_submission(
    env: dict[str, str], tmp_path: Path, database: str, export: Path = SAMPLE
) -> list[str]:
    """`tm2 ingest` of an export killed (SIGKILL) while it sends; returns its command."""
    command = [sys.executable, "-m", "tm2_pipeline.cli", "ingest", str(export), "--json"]
    options = {"cwd": tmp_path, "env": env, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    killed = subprocess.Popen(command, text=True, start_new_session=True, **options)
    try:
        wait_for_records_in_flight(killed, env["MONGODB_URI"], database)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)  # nothing of it can record anything
        killed.wait()
    return command


@pytest.mark.integration
def test_the_nightly_retry_sends_what_a_killed_tm2_ingest_stored_and_never_reached(
    tmp_path: Path, secantus_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The records the killed run never reached were never logged, so the retry of logged
    # submissions could not see them: without a next run of the file they never reached OpenMRS.
    # More records than one claim (200): the run is killed with only the first ones logged. Its
    # last 100 rows were stored first from another file (a part of it, loaded without OpenMRS):
    # those records keep that file as their source, yet they are this file's to send.
    data = generate_tm2_csv(260, dirty_share=0, patient_ids=sandbox_patient_ids())
    header, *rows = data.rstrip(b"\r\n").split(b"\r\n")
    export, part = tmp_path / "clinic.csv", tmp_path / "part.csv"
    export.write_bytes(data)
    part.write_bytes(b"\r\n".join([header, *rows[-100:]]) + b"\r\n")
    with slow_openmrs_and_env(tmp_path, secantus_uri) as (env, database, server):
        for name in (
            "TM2_HOME",
            "DAGSTER_HOME",
            "MONGODB_URI",
            "TM2_MONGODB_DB",
            "OPENMRS_BASE_URL",
            "OPENMRS_USERNAME",
            "OPENMRS_PASSWORD",
        ):
            monkeypatch.setenv(name, env[name])
        settings = load_settings()
        with in_process_instance(prepare_dagster_home(settings)) as instance:
            stored_only = ["raw_tm2_file", "validated_tm2_records", "tm2_mongo_records"]
            assert Ingestor(settings, instance, assets=stored_only).ingest(part).status == "succeeded"
        kill_9_during_a_submission(env, tmp_path, database, export)
        server.sandbox.faults.config = FaultConfig()  # the retry need not take minutes
        client: pymongo.MongoClient = pymongo.MongoClient(secantus_uri)
        store = client[database]
        sources = {doc["_id"]: doc["source"]["file"] for doc in store["tm2_records"].find({}, {"source": 1})}
        logged = {document["_id"] for document in store["openmrs_submissions"].find({}, {"_id": 1})}
        assert "part.csv" in {sources[key] for key in set(sources) - logged}  # the case in point

        nightly = build_definitions(settings).resolve_job_def("openmrs_retry")
        with in_process_instance(prepare_dagster_home(settings)) as instance:
            first = nightly.execute_in_process(instance=instance)
            again = nightly.execute_in_process(instance=instance)
            [killed_run] = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "clinic.csv"}))
        conditions = dict(server.sandbox.state.conditions)
        log = {document["_id"]: document["state"] for document in store["openmrs_submissions"].find()}
        ledger = store["tm2_ingestions"].find_one({"file": "clinic.csv"})
        client.close()

    assert first.success and again.success
    assert set(log) == set(sources)  # every stored record was sent, or is logged for a later try
    in_openmrs = {key for key, state in log.items() if state in ("submitted", "already_present")}
    assert set(conditions) == {condition_uuid(key) for key in in_openmrs}  # each once
    assert killed_run.status == dg.DagsterRunStatus.CANCELED
    assert is_abandoned(killed_run) and own_tag(killed_run, FINISHED_TAG).startswith("sent what it left (")
    assert ledger["status"] == "succeeded" and ledger["counts"]["in_openmrs"] == len(in_openmrs)
    sent_again = [
        event.asset_observation_data.asset_observation.metadata["submitted_this_run"].value
        for event in again.all_events
        if event.event_type_value == "ASSET_OBSERVATION"
    ]
    assert sent_again == [0]


KEY = ["run_id", "compute_logs", "abcdefgh"]
QUIET, LOCAL, NOOP = QuietLocalComputeLogManager, LocalComputeLogManager, NoOpComputeLogManager
IN_LOGS_DIR = {"module": "dagster.core.storage.local_compute_log_manager", "class": "LocalComputeLogManager"}
NOOP_CLASS = {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}


@pytest.mark.parametrize(
    ("compute_logs", "cli_type", "ui_type", "base"),
    [
        ("repo", QUIET, QUIET, "dagster/storage"),  # this repo's dagster.yaml: Dagster's default dir
        (None, QUIET, LOCAL, "dagster/storage"),  # one seeded before it named QUIET: Dagster's default
        (IN_LOGS_DIR, QUIET, LOCAL, "logs"),  # Dagster's, in a dir of the user's
        (NOOP_CLASS, NOOP, NOOP, None),  # another choice is left alone
    ],
)
def test_the_cli_and_the_ui_capture_into_the_same_files(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    compute_logs: str | dict | None,
    cli_type: type,
    ui_type: type,
    base: str | None,
) -> None:
    home = tmp_path / "dagster"
    home.mkdir()
    instance_config = yaml.safe_load(REPO_DAGSTER_YAML.read_text())
    if compute_logs != "repo":
        del instance_config["compute_logs"]
        if compute_logs is IN_LOGS_DIR:
            instance_config["compute_logs"] = {**IN_LOGS_DIR, "config": {"base_dir": str(tmp_path / "logs")}}
        elif compute_logs is not None:
            instance_config["compute_logs"] = compute_logs
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the repo's dagster.yaml names it
    with in_process_instance(home) as cli, dg.DagsterInstance.from_config(str(home)) as ui:
        assert type(cli.compute_log_manager) is cli_type
        assert type(ui.compute_log_manager) is ui_type
        if base is not None:
            stdout_file = cli.compute_log_manager.get_captured_local_path(KEY, "out")
            assert stdout_file == ui.compute_log_manager.get_captured_local_path(KEY, "out")
            assert stdout_file == str(tmp_path / base / "run_id" / "compute_logs" / "abcdefgh.out")
