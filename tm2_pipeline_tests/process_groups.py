"""The processes of a process group, for tests that stop a command as a terminal's Ctrl-C does; a
process that has ended, for tests of runs whose process died."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

from tm2_pipeline.process_identity import identity_of


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid:
                members.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def ended_process_identity() -> str:
    """The `process_identity` of a process of this machine that has since ended."""
    ended = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        identity = identity_of(ended.pid)
    finally:
        ended.kill()
        ended.wait()
    assert identity is not None
    return identity
