"""`run_in_foreground` (what `tm2 ui` runs `dagster dev` with), on real processes: a command whose own
child outlives it after a stop signal, as dagster dev's run worker does. test_ui_interrupt.py runs
the real `tm2 ui`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.timeout(60)

# The command: starts a worker, then ends 0.3 s after SIGINT without waiting for it (dagster dev,
# whose shutdown takes a while but does not wait for the run worker), or dies of SIGTERM (the
# default action).
COMMAND = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    worker = subprocess.Popen([sys.executable, sys.argv[1], *sys.argv[2:]])
    def end(*_):
        time.sleep(0.3)
        sys.exit(0)
    signal.signal(signal.SIGINT, end)
    time.sleep(120)
    """
)
# The worker: takes 1.5 s to end after SIGINT (a run recording its failure), writing `ended` then;
# with "stubborn" it ignores SIGINT altogether. It first starts a server in a session of its own
# (the embedded store a run starts, meant to outlive it), which writes `server.pid`.
WORKER = textwrap.dedent(
    """
    import os, pathlib, signal, subprocess, sys, time
    folder = pathlib.Path(sys.argv[1])
    server = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )
    (folder / "server.pid").write_text(str(server.pid))
    def end(*_):
        time.sleep(1.5)
        (folder / "ended").write_text("")
        sys.exit(0)
    stubborn = sys.argv[2:] == ["stubborn"]
    signal.signal(signal.SIGINT, signal.SIG_IGN if stubborn else end)
    (folder / "worker.pid").write_text(str(os.getpid()))
    time.sleep(120)
    """
)
DRIVER = textwrap.dedent(
    """
    import sys
    from tm2_pipeline.foreground import run_in_foreground
    grace_s, *command = sys.argv[1:]
    sys.exit(run_in_foreground([sys.executable, *command], grace_s=float(grace_s)))
    """
)


class Started:
    """The driver (as `tm2 ui`) in its own process group, as a terminal starts a command."""

    def __init__(self, folder: Path, *, grace_s: float = 30, stubborn: bool = False) -> None:
        (folder / "command.py").write_text(COMMAND)
        (folder / "worker.py").write_text(WORKER)
        arguments = [str(folder / "command.py"), str(folder / "worker.py"), str(folder)]
        self.folder = folder
        self.output = folder / "driver.log"
        with self.output.open("wb") as sink:
            self.driver = subprocess.Popen(
                [sys.executable, "-c", DRIVER, str(grace_s), *arguments, *(["stubborn"] if stubborn else [])],
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.worker = self._wait_for_worker()
        self.server = psutil.Process(int((folder / "server.pid").read_text()))

    def _wait_for_worker(self) -> psutil.Process:
        deadline = time.monotonic() + 20
        pid_file = self.folder / "worker.pid"
        while time.monotonic() < deadline:
            if pid_file.exists() and pid_file.read_text():
                return psutil.Process(int(pid_file.read_text()))
            time.sleep(0.05)
        raise AssertionError("the worker did not start")

    def wait(self) -> int:
        return self.driver.wait(timeout=30)

    @property
    def worker_ended(self) -> bool:
        return (self.folder / "ended").exists()

    def kill_all(self) -> None:
        if self.driver.poll() is None:  # a test that failed early
            self.driver.kill()
            self.driver.wait()
        for process in (self.worker, self.server):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()

    def assert_server_left_alone(self) -> None:
        """Neither waited for nor signalled: it lives in a session of its own, on purpose."""
        assert self.server.is_running() and self.server.status() != psutil.STATUS_ZOMBIE
        assert "still stopping" not in self.output.read_text()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Started]]:
    """Starts the driver as `Started(tmp_path, **options)`; kills what a test leaves running."""
    started: list[Started] = []

    def make(**options: object) -> Started:
        started.append(Started(tmp_path, **options))
        return started[-1]

    yield make
    for each in started:
        each.kill_all()


def test_after_ctrl_c_it_returns_only_once_the_worker_has_ended(start: Callable[..., Started]) -> None:
    started = start()
    os.killpg(started.driver.pid, signal.SIGINT)  # Ctrl-C in a terminal
    assert started.wait() == 0
    assert started.worker_ended  # before, it returned with the worker 1.5 s from ending
    assert "waiting for 1 process(es)" in started.output.read_text()
    started.assert_server_left_alone()  # it was waited for 60 s, then named, before


def test_sigterm_to_it_alone_stops_the_worker_too(start: Callable[..., Started]) -> None:
    started = start()
    started.driver.send_signal(signal.SIGTERM)  # `kill`, a service manager: to this process only
    assert started.wait() == 0  # the command was stopped as by Ctrl-C, not killed by SIGTERM
    assert started.worker_ended  # before, the worker never heard of it and ran on
    started.assert_server_left_alone()  # the shared store was stopped too, before


def test_a_worker_that_will_not_end_is_named_not_killed(start: Callable[..., Started]) -> None:
    started = start(grace_s=2, stubborn=True)
    os.killpg(started.driver.pid, signal.SIGINT)
    assert started.wait() == 0
    output = started.output.read_text()
    assert f"still stopping, left running: {started.folder / 'worker.py'}" in output
    assert f"(pid {started.worker.pid})" in output
    assert started.worker.is_running()


def test_a_second_ctrl_c_stops_the_wait(start: Callable[..., Started]) -> None:
    started = start(grace_s=30, stubborn=True)
    os.killpg(started.driver.pid, signal.SIGINT)
    deadline = time.monotonic() + 10
    while "waiting for" not in started.output.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    began = time.monotonic()
    for _ in range(3):  # in a burst: a signal raising out of a handler could escape as a traceback
        started.driver.send_signal(signal.SIGINT)
    assert started.wait() == 0
    assert time.monotonic() - began < 10  # not the 30 s grace
    output = started.output.read_text()
    assert "still stopping, left running" in output and "Traceback" not in output
