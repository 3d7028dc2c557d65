"""Run a command (`dagster dev`) in the foreground until it, and everything it started, has stopped.

`dagster dev` ends once its webserver, daemon and code server have been told to stop; the code
server's run worker, still writing the interrupted run's failure, can outlive it. Returning then
would hand the terminal back with a run still ending (its lines printed after the prompt) and, on
a SIGTERM, a run going on unattended. So the processes below this one are taken note of when the
stop signal comes, and waited for, a bounded time, after the command itself has ended.

Only processes of this session count: one started in a session of its own chose to outlive the
command (the embedded MongoDB store a run may have started, shared with other commands).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import psutil

# How long the processes left behind get to end after the command did: an interrupted run worker
# records the run's failure within seconds; past this, say what is left instead of hanging.
STOP_GRACE_S = 60.0
# Only after this long is "waiting for N processes" worth a line.
QUIET_WAIT_S = 1.0


def run_in_foreground(
    command: list[str], *, grace_s: float = STOP_GRACE_S, say: Callable[[str], None] | None = None
) -> int:
    """Run `command`; return its exit code once it and the processes below it have ended.

    - A SIGINT is taken for Ctrl-C in a terminal, which reaches the command's whole process group
      directly: this process only notes what runs below it, then waits. (Which process sent a
      signal cannot be told here; sending another SIGINT would be a second Ctrl-C to all.)
    - A SIGTERM sent to this process (`kill`, a service manager) is turned into what Ctrl-C does:
      SIGINT to every process below this one, the run worker included.
    - After the command ends, what it left running gets `grace_s` to end; a second signal stops
      the wait. Whatever is still running then is named on `say`, never killed.
    """
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    stopping: dict[int, psutil.Process] = {}
    started: list[subprocess.Popen] = []
    received: list[int] = []

    def stop_below(signum: int, frame: object) -> None:
        received.append(signum)
        stopping.update(_processes_below())
        if signum == signal.SIGINT:
            return  # a Ctrl-C: the terminal sent it to the whole process group already
        for process in stopping.values():
            try:
                process.send_signal(signal.SIGINT)  # psutil checks the pid still names that process
            except psutil.Error:
                continue

    # Handlers, not SIG_IGN: the command starts with both signals at their defaults, as a handler is
    # not inherited across exec (SIG_IGN is), and no signal falls between start and wait.
    previous_int = signal.signal(signal.SIGINT, stop_below)
    previous_term = signal.signal(signal.SIGTERM, stop_below)
    try:
        started.append(subprocess.Popen(command, env=os.environ.copy()))
        if received:  # a signal came while the command was being started
            started[0].send_signal(signal.SIGINT)
        returncode = started[0].wait()
        if received:
            _wait_for_the_rest(list(stopping.values()), grace_s, say)
        return returncode
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)


def _processes_below() -> dict[int, psutil.Process]:
    """The processes below this one, in this session."""
    session = os.getsid(0)
    found = {}
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:  # a process ended while being listed: the next signal lists again
        return found
    for process in children:
        try:
            if os.getsid(process.pid) == session:
                found[process.pid] = process
        except OSError:  # ended since
            continue
    return found


def _wait_for_the_rest(processes: list[psutil.Process], grace_s: float, say: Callable[[str], None]) -> None:
    alive = _still_running(processes, min(QUIET_WAIT_S, grace_s))
    if not alive:
        return
    say(f"waiting for {len(alive)} process(es) started by dagster dev to stop (a run being ended)")
    # A flag, not an exception: raised from a handler, a third signal could land outside any `try`.
    cut_short: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: cut_short.append(signum))
    signal.signal(signal.SIGTERM, lambda signum, frame: cut_short.append(signum))
    alive = _still_running(alive, max(grace_s - QUIET_WAIT_S, 0), until=lambda: bool(cut_short))
    if alive:
        names = ", ".join(f"{_describe(process)} (pid {process.pid})" for process in alive)
        say(f"still stopping, left running: {names}")


def _still_running(
    processes: list[psutil.Process], timeout_s: float, until: Callable[[], bool] = lambda: False
) -> list[psutil.Process]:
    """Those of `processes` still running after up to `timeout_s`, or once `until()` is true.
    Polled rather than `psutil.wait_procs`: an orphan's zombie counts as ended even where nothing
    reaps it (a container whose PID 1 does not), where waiting on its pid would last the whole
    timeout."""
    deadline = time.monotonic() + timeout_s
    alive = [process for process in processes if _running(process)]
    while alive and time.monotonic() < deadline and not until():
        time.sleep(0.05)
        alive = [process for process in alive if _running(process)]
    return alive


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _describe(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline()[1:4]) or process.name()
    except psutil.Error:
        return "a process"
