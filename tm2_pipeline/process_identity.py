"""Naming a process so that another process can tell, later, whether it is still running.

`<host>:<boot>:<pid namespace>:<pid>:<start>`. A pid alone is reused; so the start time comes with
it. On Linux that is the start in clock ticks since boot (`/proc/<pid>/stat`), compared exactly:
psutil's `create_time()` adds the boot time to it, and re-reads that from the wall clock, so a clock
step (NTP, a VM resumed) moves it by a second and a live process would look like another. The boot
id tells a restarted machine (nothing of an earlier boot runs) and the pid namespace a container
sharing the host's name (whose processes cannot be seen from here). Elsewhere (macOS, Windows) the
boot and namespace are unknown and psutil's start time, fixed there, is compared within a second.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psutil

UNKNOWN = "-"


def identity_of(pid: int) -> str | None:
    """The identity of a running process, or None when it has ended or cannot be read."""
    start = _start_of(pid)
    if start is None:
        return None
    return f"{socket.gethostname()}:{_boot_id()}:{_pid_namespace()}:{pid}:{start}"


def is_gone(identity: str) -> bool:
    """Whether the process named is known to have ended. What cannot be told here (another host,
    another container, an unreadable process, a malformed identity) counts as still running."""
    try:
        host, boot, namespace, pid_text, start = identity.rsplit(":", 4)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    if boot != UNKNOWN and boot != _boot_id():
        return True  # this machine has restarted since
    if namespace != _pid_namespace():
        return False
    try:
        current = _start_of(pid, missing_is_error=True)
    except psutil.NoSuchProcess:
        return True
    if current is None:
        return False
    if start == current:
        return False
    if boot != UNKNOWN:
        return True  # exact ticks: the pid names another process now
    try:
        return abs(float(current) - float(start)) > 1.0
    except ValueError:
        return False


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or UNKNOWN
    except OSError:
        return UNKNOWN


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return UNKNOWN


def _start_of(pid: int, *, missing_is_error: bool = False) -> str | None:
    """The process's start: clock ticks since boot on Linux, else psutil's create_time."""
    try:
        if _boot_id() != UNKNOWN:
            stat = Path(f"/proc/{pid}/stat").read_text()
            # Fields after the command name, which may hold spaces and parentheses; starttime is
            # field 22, the 20th after it.
            return stat[stat.rindex(")") + 2 :].split()[19]
        return f"{psutil.Process(pid).create_time():.2f}"
    except (FileNotFoundError, ProcessLookupError, psutil.NoSuchProcess):
        if missing_is_error:
            raise psutil.NoSuchProcess(pid) from None
        return None
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
