"""Stopping the real `tm2 ui` during a run of the landing sensor and when idle, by Ctrl-C (SIGINT to its
whole process group, as from a terminal) or by SIGTERM to it alone (`kill`): no traceback (the run's
step processes capture their output through this repo's dagster.yaml's
QuietLocalComputeLogManager), and `tm2 ui` returns only once `dagster dev` and everything it started
(code server, run worker) have ended. The interrupted run is recorded as failed, to be retried, and
its file stays in landing."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import psutil
import pytest
from dagster._core.events import DagsterEventType

from bench.generate import generate_tm2_csv
from tm2_pipeline.abandoned_runs import is_abandoned
from tm2_pipeline.sensors import ATTEMPT_TAG
from tm2_pipeline_tests.dagster_dev import DagsterDev, isolated_env
from tm2_pipeline_tests.process_groups import group_members

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROWS = 150_000  # validating them takes seconds, even on a fast machine: the Ctrl-C lands in it
STEP_STATS = """
{ runsOrError { __typename
    ... on Runs { results { runId stepStats { stepKey status } } }
    ... on PythonError { message } } }
"""


def watchers(pgid: int) -> list[psutil.Process]:
    """Dagster's orphan watchers (`watch_orphans.py`) running in the group: a step is capturing."""
    found = []
    for process in group_members(pgid):
        try:
            if any(Path(part).name == "watch_orphans.py" for part in process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def wait_for_validation_under_way(ui: DagsterDev, timeout_s: float = 150) -> str:
    """The run id, once its validated_tm2_records step has started (so its log capture runs)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = ui.graphql(STEP_STATS)["runsOrError"]
        assert runs["__typename"] == "Runs", runs
        for run in runs["results"]:
            steps = {step["stepKey"]: step["status"] for step in run["stepStats"]}
            if steps.get("validated_tm2_records") == "IN_PROGRESS":
                return run["runId"]
            assert "FAILURE" not in steps.values(), f"{run}\n{ui.log_tail()}"
        time.sleep(0.2)
    raise AssertionError(f"no validation under way after {timeout_s:.0f} s\n{ui.log_tail()}")


def stop(ui: DagsterDev, send: Callable[[int], None]) -> tuple[int, list[str]]:
    """`send(pid of tm2 ui)` stops it; its exit code, and what it started that still runs once it has
    ended (a second's slack for the last exits to be seen)."""
    assert ui.process is not None
    tm2_ui = psutil.Process(ui.process.pid)
    started = [tm2_ui, *tm2_ui.children(recursive=True)]
    assert len(started) >= 4  # tm2 ui, dagster dev, the webserver, the daemon (and code servers)
    send(ui.process.pid)
    returncode = ui.process.wait(timeout=60)
    _gone, alive = psutil.wait_procs([*started, *group_members(ui.process.pid)], timeout=1)
    left = []
    for process in alive:
        try:
            left.append(" ".join(process.cmdline()[:4]))
        except psutil.Error:  # ended since
            continue
    return returncode, left


def ctrl_c(ui: DagsterDev) -> tuple[int, list[str]]:
    return stop(ui, lambda pid: os.killpg(pid, signal.SIGINT))  # what Ctrl-C in a terminal does


def sigterm(ui: DagsterDev) -> tuple[int, list[str]]:
    return stop(ui, lambda pid: os.kill(pid, signal.SIGTERM))  # `kill`, a service manager: tm2 ui alone


def assert_quiet_and_complete_shutdown(log: Path, returncode: int, left: list[str]) -> None:
    output = log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in output, output[-6000:]
    assert "Aborted!" not in output, output[-6000:]  # what click printed when tm2 ui itself was hit
    assert "Dagster services shut down." in output, output[-6000:]  # dagster dev was not cut short
    assert returncode == 0, output[-6000:]
    assert left == []


@pytest.mark.parametrize("stop_it", [ctrl_c, sigterm], ids=["ctrl_c", "sigterm"])
def test_stopped_during_a_run_it_prints_no_traceback_and_leaves_nothing_running(
    tmp_path: Path,
    secantus_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    stop_it: Callable[[DagsterDev], tuple[int, list[str]]],
) -> None:
    # With SIGTERM, the run worker used to run on after tm2 ui and dagster dev had ended; with
    # either, tm2 ui returned before the run worker and code server had.
    tm2_home = tmp_path / "home"
    landing = tm2_home / "landing"
    landing.mkdir(parents=True)
    (landing / "big.csv").write_bytes(generate_tm2_csv(ROWS))  # before the start: the first tick takes it
    env = isolated_env(
        tm2_home,
        MONGODB_URI=secantus_uri,
        TM2_MONGODB_DB=f"ui_{uuid.uuid4().hex[:10]}",
        TM2_SENSOR_INTERVAL_S="1",
    )
    log = tmp_path / "tm2-ui.log"
    with DagsterDev(env, log_path=log, cwd=tmp_path, tm2_ui=True) as ui:
        assert ui.process is not None
        run_id = wait_for_validation_under_way(ui)
        assert len(watchers(ui.process.pid)) == 2  # the step's log capture: stdout and stderr
        returncode, left = stop_it(ui)

    assert_quiet_and_complete_shutdown(log, returncode, left)
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])  # the instance's dagster.yaml names it
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
        assert run.tags.get("dagster/will_retry") == "true"  # the next `tm2 ui` runs it again
        failed = instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
        assert [event.step_key for event in failed] == ["validated_tm2_records"]  # hit in its capture
    assert (landing / "big.csv").exists()  # nothing archived: the file waits for that retry
    assert not (tm2_home / "processed").exists() and not (tm2_home / "failed").exists()


def test_ctrl_c_with_no_run_going_is_as_quiet(tmp_path: Path, secantus_uri: str) -> None:
    env = isolated_env(tmp_path / "home", MONGODB_URI=secantus_uri)
    log = tmp_path / "tm2-ui.log"
    with DagsterDev(env, log_path=log, cwd=tmp_path, tm2_ui=True) as ui:
        returncode, left = ctrl_c(ui)
    assert_quiet_and_complete_shutdown(log, returncode, left)


def test_sigterm_to_tm2_ui_alone_stops_what_it_started(tmp_path: Path, secantus_uri: str) -> None:
    # `kill <pid of tm2 ui>`: it used to end alone, and the UI and daemon ran on, holding the port.
    env = isolated_env(tmp_path / "home", MONGODB_URI=secantus_uri)
    log = tmp_path / "tm2-ui.log"
    with DagsterDev(env, log_path=log, cwd=tmp_path, tm2_ui=True) as ui:
        returncode, left = sigterm(ui)
    assert_quiet_and_complete_shutdown(log, returncode, left)


def test_a_run_cut_off_by_a_power_cut_is_run_again_at_the_next_start_not_a_day_later(
    tmp_path: Path, secantus_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Everything of `tm2 ui` killed at once (a power cut, a reboot): the run stayed "started" until
    # the run monitor's limit, a day, and the landing sensor held its file all that time. Its run
    # worker is named in a tag by its first step; gone at the next start, the run is canceled as
    # abandoned and the sensor runs the file again as its next attempt.
    tm2_home = tmp_path / "home"
    landing = tm2_home / "landing"
    landing.mkdir(parents=True)
    (landing / "big.csv").write_bytes(generate_tm2_csv(ROWS))
    env = isolated_env(
        tm2_home,
        MONGODB_URI=secantus_uri,
        TM2_MONGODB_DB=f"ui_{uuid.uuid4().hex[:10]}",
        TM2_SENSOR_INTERVAL_S="1",
    )
    with DagsterDev(env, log_path=tmp_path / "first.log", cwd=tmp_path, tm2_ui=True) as ui:
        assert ui.process is not None
        cut_off = wait_for_validation_under_way(ui)
        os.killpg(ui.process.pid, signal.SIGKILL)  # nothing of it can record anything
        ui.process.wait(timeout=30)

    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])  # the instance's dagster.yaml names it
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert instance.get_run_by_id(cut_off).status == dg.DagsterRunStatus.STARTED
        with DagsterDev(env, log_path=tmp_path / "second.log", cwd=tmp_path, tm2_ui=True) as ui:
            deadline = time.monotonic() + 120
            while not (retry := instance.get_runs(dg.RunsFilter(tags={ATTEMPT_TAG: "2"}))):
                assert time.monotonic() < deadline, ui.log_tail()
                time.sleep(0.5)
            ctrl_c(ui)
        run = instance.get_run_by_id(cut_off)
    assert run.status == dg.DagsterRunStatus.CANCELED and is_abandoned(run)
    assert [other.tags["dagster/partition"] for other in retry] == ["big.csv"]
