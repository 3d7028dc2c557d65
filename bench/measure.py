"""What one benchmark stage measured, and how: wall clock, CPU of this process and its children, peak RSS.

CPU is `getrusage(RUSAGE_SELF) + getrusage(RUSAGE_CHILDREN)` around the measured block: the MongoDB
server and the OpenMRS emulator are never children that this process waits for (the store is
started through a short-lived helper, so it is re-parented; the emulator belongs to the orchestrator),
so their CPU is never counted. Peak RSS is the stage process's own high-water mark (VmHWM): each
stage runs in a fresh process, so it includes the interpreter and its imports.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StageResult:
    stage: str
    rows: int = 0  # what the stage processed (file rows, documents, records)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s else float("nan")

    @property
    def cpu_us_per_row(self) -> float:
        return self.cpu_s / self.rows * 1e6 if self.rows else float("nan")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StageResult:
        return cls(**json.loads(text))


def cpu_seconds() -> float:
    """User + system CPU of this process and of the children it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mb() -> float:
    """This process's own high-water mark: Linux's VmHWM, which starts afresh at exec.

    Not `ru_maxrss`: Linux carries it across exec, so a stage would report the orchestrator's peak
    at the moment it was spawned whenever that is higher (generating 2M rows peaks at 900 MB).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # elsewhere (Linux: kilobytes)


@contextmanager
def measured(result: StageResult) -> Iterator[StageResult]:
    """Fill `result`'s wall_s, cpu_s and peak_rss_mb with what the block cost."""
    cpu = cpu_seconds()
    wall = time.perf_counter()
    try:
        yield result
    finally:
        result.wall_s = time.perf_counter() - wall
        result.cpu_s = cpu_seconds() - cpu
        result.peak_rss_mb = peak_rss_mb()
