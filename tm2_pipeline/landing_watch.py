"""What the landing sensor sees in the landing dir, and what it remembers of each file between ticks.

A file is a candidate once its (size, mtime, ctime) did not change for a tick; lock files and
partial downloads never are. Files are served in order of arrival (`arrival`), and those the sensor
cannot read are passed over (`next_in_line`). The cursor keeps each waiting file's hash while those are
unchanged (hashed once, not every tick) and which runs came before its arrival (`LandedFile`).
"""

from __future__ import annotations

import heapq
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

# Files that are still being written or are not exports: editors' lock and swap files, partial
# downloads and uploads (browsers, WinSCP, sync tools), folder metadata. Compared lower-cased.
IGNORED_PREFIXES = (".", "~$")
IGNORED_SUFFIXES = (".part", ".tmp", ".filepart", ".crdownload", ".partial", ".swp", "~", ".!sync")
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})
# The one cursor entry that is not a file: where the line of waiting files starts (`next_in_line`). No
# file name contains "/"; the sensor's earlier versions skip an entry that is not an object.
RESUME_KEY = "/resume_after"

Place = tuple[int, str]  # `arrival`


def is_ignored(name: str) -> bool:
    lowered = name.lower()
    return (
        lowered.startswith(IGNORED_PREFIXES) or lowered.endswith(IGNORED_SUFFIXES) or lowered in IGNORED_NAMES
    )


def scan_landing_dir(landing_dir: Path) -> dict[str, tuple[int, int, int]]:
    """name -> (size, mtime_ns, ctime_ns) of candidate files; temporary and lock files are not candidates.

    ctime too: it changes with any write and cannot be set back, so an unchanged triple means unchanged bytes.
    """
    if not landing_dir.is_dir():
        return {}
    found: dict[str, tuple[int, int, int]] = {}
    with os.scandir(landing_dir) as entries:
        for entry in entries:
            if is_ignored(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
            found[entry.name] = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    return found


def is_unchanged(path: Path, seen: tuple[int, ...]) -> bool:
    """Whether the file still has the (size, mtime_ns, ctime_ns) `scan_landing_dir` saw."""
    try:
        stat = path.stat(follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns) == tuple(seen)


def arrival(name: str, seen: tuple[int, ...]) -> Place:
    """A file's place in line: its ctime (from `seen`), then its name.

    The ctime is the last change of the file itself, by the system's clock: its last write, its move
    or rename into the landing dir, a change of its permissions. Files landing later come after it,
    whatever their names and mtimes (`mv`, `cp -p` and `rsync -t` keep an old mtime: by mtime, old
    exports moved in later would go first). A file still being written keeps moving back, and is not
    stable anyway. On Windows, Python's st_ctime is the file's creation time.
    """
    return (seen[2], name)


def stable_files(current: dict[str, tuple[int, ...]], previous: dict[str, tuple[int, ...]]) -> list[str]:
    """Files whose size and times did not change since the previous look (their writer is done), in
    order of arrival.

    Readiness compares with the previous look, never with a high-water mark of times: an atomic `mv`
    keeps a file's old mtime.
    """
    return sorted(
        (name for name, seen in current.items() if previous.get(name) == seen),
        key=lambda name: arrival(name, current[name]),
    )


@dataclass
class LandedFile:
    """What the landing sensor remembers of one file still in the landing dir."""

    seen: tuple[int, ...]  # scan_landing_dir's (size, mtime_ns, ctime_ns)
    sha256: str | None = None  # hashed once stable; reused while `seen` holds
    # Storage id of the file's partition's newest run when the sensor first handled this arrival:
    # runs after it are this arrival's attempts (a file put back after failing is tried again).
    arrived_after_run: int | None = None

    @property
    def started(self) -> bool:
        """Whether the sensor has started on this file (hashed it, looked at its runs)."""
        return self.sha256 is not None or self.arrived_after_run is not None


def next_in_line(
    waiting: dict[str, tuple[int, ...]], count: int, unreadable: set[str], resume_after: Place | None
) -> tuple[set[str], Place | None]:
    """The `count` files not started on to watch next, and where their line starts then.

    `waiting`: name -> seen of the files not started on; `unreadable`: those of them that could not be
    read (hashed) this tick; `resume_after`: where the line started this tick (None: at its head). The
    line is in order of arrival, from the first file after `resume_after`, then round from the head
    again. It moves on past the files at its head that could not be read: they go to the back instead
    of holding its first places for ever (an upload left unreadable to the sensor stays in landing until
    someone fixes it), and are tried again when the line comes round to them (every tick while fewer
    files wait than are watched); a change of their permissions changes their ctime, a new arrival.
    Nothing is kept per file for this: the cursor stays as small however many such files there are.

    A file landing with a time at or before `resume_after` (a move on Windows keeps the creation time)
    waits behind later ones until the line comes round to it, or until no file passed over waits any
    more (the line then starts at its head again).
    """

    def place(name: str, start: Place | None) -> tuple[bool, int, str]:
        here = arrival(name, waiting[name])
        return (start is not None and here <= start, *here)

    head = heapq.nsmallest(len(unreadable) + 1, waiting, key=lambda name: place(name, resume_after))
    for name in head:
        if name not in unreadable:
            break
        resume_after = arrival(name, waiting[name])
    if resume_after is not None and all(arrival(name, seen) > resume_after for name, seen in waiting.items()):
        resume_after = None  # nothing passed over waits any more
    watched = heapq.nsmallest(count, waiting, key=lambda name: place(name, resume_after))
    return set(watched), resume_after


def read_cursor(cursor: str | None) -> tuple[dict[str, LandedFile], Place | None]:
    """The sensor's cursor: its files, and where the line of waiting files starts (`next_in_line`).
    Entries in an older format are forgotten (the file waits one more tick)."""
    files: dict[str, LandedFile] = {}
    entries = json.loads(cursor or "{}")
    resume = entries.pop(RESUME_KEY, None)
    for name, entry in entries.items():
        if isinstance(entry, dict):
            files[name] = LandedFile(
                seen=tuple(entry["seen"]),
                sha256=entry.get("sha256"),
                arrived_after_run=entry.get("arrived_after_run"),
            )
    return files, ((resume[0], resume[1]) if resume else None)


def write_cursor(files: dict[str, LandedFile], resume_after: Place | None = None) -> str:
    entries: dict[str, object] = {name: asdict(landed) for name, landed in files.items()}
    if resume_after is not None:
        entries[RESUME_KEY] = list(resume_after)
    return json.dumps(entries, sort_keys=True)


def remembered(current: dict[str, tuple[int, ...]], previous: dict[str, LandedFile]) -> dict[str, LandedFile]:
    """This tick's entries: a file's hash is kept while it is unchanged, its arrival while it stays."""
    files = {}
    for name, seen in current.items():
        before = previous.get(name)
        if before is None:
            files[name] = LandedFile(seen)
        elif before.seen == seen:
            files[name] = before
        else:
            files[name] = LandedFile(seen, arrived_after_run=before.arrived_after_run)
    return files
