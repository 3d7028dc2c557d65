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
TICKS, CREATED = "t", "c"  # how a start was read: /proc ticks, or psutil's create_time


def identity_of(pid: int) -> str | None:
    """The identity of a running process, or None when it has ended or cannot be read."""
    try:
        start = _start_of(pid)
    except psutil.NoSuchProcess:
        return None
    if start is None:
        return None
    return f"{socket.gethostname()}:{_boot_id()}:{_pid_namespace()}:{pid}:{start}"


def is_gone(identity: str) -> bool:
    """Whether the process named is known to have ended. What cannot be told here counts as still
    running: another host or container, an unreadable process or boot id, a start read another way
    than it was written, a malformed identity."""
    try:
        host, boot, namespace, pid_text, start = identity.rsplit(":", 4)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    this_boot = _boot_id()
    if UNKNOWN not in (boot, this_boot) and boot != this_boot:
        return True  # this machine has restarted since
    if namespace != _pid_namespace():
        return False
    try:
        current = _start_of(pid)
    except psutil.NoSuchProcess:
        return True
    if current is None or current[:1] != start[:1]:
        return False
    if current == start:
        return False
    if start.startswith(TICKS):
        return True  # exact: the pid names another process now
    try:
        return abs(float(current[1:]) - float(start[1:])) > 1.0
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


def _start_of(pid: int) -> str | None:
    """The process's start: `t<clock ticks since boot>` where /proc is there, else
    `c<psutil create_time>`; None when it cannot be read. Raises psutil.NoSuchProcess when the
    process is known to have ended (a zombie has: it only waits to be reaped)."""
    if Path("/proc/self/stat").exists():
        if not _proc_is_ours():
            return None  # /proc of another pid namespace (a container's, not remounted)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            # hidepid=2 hides other users' processes too: only a pid not there at all is gone.
            if _pid_exists(pid):
                return None
            raise psutil.NoSuchProcess(pid) from None
        except OSError:
            return None
        try:
            # Fields after the command name, which may hold spaces and parentheses: the state
            # first, starttime (field 22) the 20th.
            fields = stat[stat.rindex(")") + 2 :].split()
            state, ticks = fields[0], fields[19]
        except (ValueError, IndexError):
            return None
        if state in ("Z", "X"):
            raise psutil.NoSuchProcess(pid)
        return TICKS + ticks
    try:
        return f"{CREATED}{psutil.Process(pid).create_time():.2f}"
    except psutil.NoSuchProcess:
        raise
    except psutil.Error:
        return None


def _proc_is_ours() -> bool:
    """Whether /proc shows this process's pid namespace (its `self` is our pid)."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's
        return True
    return True
