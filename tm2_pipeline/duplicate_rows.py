"""Rows dropped as duplicates, each with the row whose record key it repeats, kept compact.

A file exported twice over is two-thirds duplicates: as a dict per row that is ~250 bytes each,
here 16 (two int64 columns per chunk).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np


class DuplicateRows:
    """{row, duplicate_of_row} pairs in row order, added a chunk at a time (chunks in row order)."""

    def __init__(self) -> None:
        self._rows: list[np.ndarray] = []
        self._first_rows: list[np.ndarray] = []

    def add_chunk(self, duplicates: Iterable[Mapping[str, int]]) -> None:
        """One chunk's duplicates, sorted by row, all after the rows added before."""
        pairs = [(duplicate["row"], duplicate["duplicate_of_row"]) for duplicate in duplicates]
        if not pairs:
            return
        rows, first_rows = (np.array(column, dtype=np.int64) for column in zip(*pairs, strict=True))
        previous = self._rows[-1][-1] if self._rows else None
        if np.any(np.diff(rows) <= 0) or (previous is not None and rows[0] <= previous):
            raise ValueError("duplicate rows must come in row order, each row once")
        self._rows.append(rows)
        self._first_rows.append(first_rows)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._rows)

    def __iter__(self) -> Iterator[dict[str, int]]:
        for rows, first_rows in zip(self._rows, self._first_rows, strict=True):
            for row, first in zip(rows.tolist(), first_rows.tolist(), strict=True):
                yield {"row": row, "duplicate_of_row": first}

    def first(self, limit: int) -> list[int]:
        """The row numbers of the first `limit` duplicates."""
        taken: list[int] = []
        for rows in self._rows:
            if len(taken) >= limit:
                break
            taken += rows[: limit - len(taken)].tolist()
        return taken
