"""Telling whether a process named earlier still runs: never a live one taken for gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tm2_pipeline import process_identity
from tm2_pipeline.process_identity import identity_of, is_gone
from tm2_pipeline_tests.process_groups import ended_process_identity

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="boot ids and /proc are Linux's")


def parts(identity: str) -> list[str]:
    return identity.rsplit(":", 4)


def test_a_live_process_is_not_gone_and_an_ended_one_is():
    mine = identity_of(os.getpid())
    assert mine is not None and parts(mine)[0] == socket.gethostname()
    assert not is_gone(mine)
    assert is_gone(ended_process_identity())


def test_what_cannot_be_told_here_counts_as_running():
    host, boot, namespace, pid, start = parts(ended_process_identity())
    assert not is_gone(":".join(["another-host", boot, namespace, pid, start]))
    assert not is_gone(":".join([host, boot, "4026531999", pid, start]))  # another container's
    assert not is_gone("not an identity")
    assert not is_gone(f"{host}:{boot}:{namespace}:not-a-pid:{start}")


@linux_only
def test_a_reused_pid_and_a_restarted_machine_are_told():
    host, boot, namespace, pid, start = parts(identity_of(os.getpid()))
    assert start.startswith("t")  # clock ticks since boot
    assert is_gone(":".join([host, boot, namespace, pid, f"t{int(start[1:]) + 1}"]))  # another process now
    assert is_gone(":".join([host, "0" * 8 + boot[8:], namespace, pid, start]))  # an earlier boot


@linux_only
def test_a_clock_step_does_not_make_a_live_process_look_gone(monkeypatch):
    # psutil derives a start time from the boot time it re-reads from the wall clock: a step of the
    # clock (NTP, a VM resumed) moves it by whole seconds.
    mine = identity_of(os.getpid())
    stepped = psutil.boot_time() + 1.0
    monkeypatch.setattr(psutil, "boot_time", lambda: stepped)
    monkeypatch.setattr(psutil.Process, "create_time", lambda self: stepped)
    assert identity_of(os.getpid()) == mine and not is_gone(mine)


@linux_only
def test_a_live_process_is_not_taken_for_gone_when_this_process_sees_less(monkeypatch):
    # The judging process may be more confined than the one that wrote the identity.
    mine = identity_of(os.getpid())
    host, boot, namespace, pid, _ = parts(mine)
    assert not is_gone(":".join([host, boot, namespace, pid, "c1795609820.11"]))  # read another way
    monkeypatch.setattr(process_identity, "_boot_id", lambda: process_identity.UNKNOWN)
    assert not is_gone(mine)
    monkeypatch.undo()
    real_read_text = Path.read_text

    def unreadable_stat(path: Path, *args, **kwargs) -> str:
        if path.name == "stat" and path.parent.name == pid:
            raise PermissionError(13, "Permission denied")
        return real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", unreadable_stat)
    assert not is_gone(mine)


@linux_only
def test_a_process_hidden_from_this_user_is_not_gone_and_a_zombie_is(monkeypatch):
    # /proc mounted hidepid=2 hides other users' processes: the pid is there, its stat file is not.
    mine = identity_of(os.getpid())
    real_read_text = Path.read_text

    def hidden(path: Path, *args, **kwargs) -> str:
        if path.name == "stat" and path.parent.name == str(os.getpid()):
            raise FileNotFoundError(2, "No such file or directory")
        return real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", hidden)
    assert not is_gone(mine)
    monkeypatch.undo()
    # A zombie has ended: it only waits for its parent to reap it.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    named = identity_of(child.pid)
    assert named is not None and not is_gone(named)
    stat = Path(f"/proc/{child.pid}/stat")
    deadline = time.monotonic() + 30
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # not reaped: no poll() or wait()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert is_gone(named)
    child.wait()


@linux_only
def test_a_proc_of_another_pid_namespace_names_nothing(monkeypatch):
    # `unshare --pid` without remounting /proc: /proc/<our pid> is another process.
    mine = identity_of(os.getpid())
    monkeypatch.setattr(os, "readlink", lambda path: "1")
    assert identity_of(os.getpid()) is None
    assert not is_gone(mine)
