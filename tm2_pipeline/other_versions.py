"""Records another version of a file name stored that this version no longer has (pure).

A corrected file adds and updates, it never retracts (README, Known limits): a row whose key fields
changed, or that was removed, leaves its earlier record in MongoDB and OpenMRS. Counting them makes
that visible on the run that does it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

_BATCH = 50_000
SHOWN = 20


@dataclass
class LeftBehind:
    count: int = 0
    # "<first 12 hex digits of the version's sha256> row <N>" of the first few: rows, never values.
    examples: list[str] = field(default_factory=list)


def left_behind(
    stored: Iterable[tuple[str, str, int]], current_keys: pa.Array | pa.ChunkedArray
) -> LeftBehind:
    """Of the records `stored` ((key, sha256, row) of records written from other versions), those
    whose key is not among `current_keys`, the keys of this version."""
    if isinstance(current_keys, pa.ChunkedArray):
        current_keys = current_keys.combine_chunks()
    found = LeftBehind()
    remaining = iter(stored)
    while batch := list(itertools.islice(remaining, _BATCH)):
        keys = pa.array([key for key, _, _ in batch], pa.string())
        missing = pc.invert(pc.is_in(keys, value_set=current_keys)).to_numpy(zero_copy_only=False)
        found.count += int(missing.sum())
        for index in missing.nonzero()[0][: SHOWN - len(found.examples)]:
            _, sha256, row = batch[index]
            found.examples.append(f"{sha256[:12]} row {row}")
    return found
