"""Pause Python's cyclic garbage collector around allocation-heavy loops that create no cycles.

Building a batch of thousands of small dicts (documents, rows) triggers the cyclic collector again
and again, and in a process holding Dagster and pandas each pass walks a large heap; yet those dicts
hold no reference cycles, so there is nothing for it to find. Reference counting still frees them.
Measured here: building 100k store documents took 0.66 s with the collector, 0.44 s without.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block; re-enable it only if it was enabled before."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
