"""Helpers for tests of the store's turns: a clock that moves only when told, and a wait for a store
to stand in the turn's line."""

from __future__ import annotations

import time

from pymongo.database import Database

from tm2_pipeline.store.store_turns import TURN_ID


class FakeClock:
    """A monotonic clock for the store's turns that moves only when told, or slept on."""

    def __init__(self, start: float = 5_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def wait_until_in_line(db: Database, file_name: str, timeout_s: float = 30.0) -> None:
    """Until a store of file_name waits for the turn (its entry in the lease's line)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lease = db["tm2_meta"].find_one({"_id": TURN_ID}) or {}
        if any(waiter.get("file") == file_name for waiter in lease.get("line") or []):
            return
        time.sleep(0.02)
    raise AssertionError(f"no store of {file_name} came to wait for the turn")
