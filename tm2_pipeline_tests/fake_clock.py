"""A monotonic clock for the store's turns that moves only when told, or slept on."""

from __future__ import annotations


class FakeClock:
    def __init__(self, start: float = 5_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
