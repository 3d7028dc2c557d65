"""The processes of a process group, for tests that stop a command as a terminal's Ctrl-C does."""

from __future__ import annotations

import os

import psutil


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid:
                members.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return members
