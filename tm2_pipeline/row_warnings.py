"""Warnings on accepted rows, kept compact: a file can carry one on every row.

A warning is a row number, what it is about (column, check) and a message. Messages repeat (one per
code, or per NAMASTE/TM2 pair), so each is kept once and a warning costs about 14 bytes (measured
with tracemalloc) instead of a dict of ~300: a million warnings take 14 MB instead of 300.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

# What a warning can be about: (column, check).
WARNING_KINDS = (("condition_name", "missing"), ("namaste_code", "namaste_mismatch"))


class RowWarnings:
    """Warnings in row order, added a chunk at a time (chunks come in row order)."""

    def __init__(self) -> None:
        self._rows: list[np.ndarray] = []  # int64 row numbers, per chunk
        self._kinds: list[np.ndarray] = []  # uint8 index into WARNING_KINDS
        self._message_ids: list[np.ndarray] = []  # int32 index into _messages
        self._messages: list[str] = []
        self._message_index: dict[str, int] = {}

    def add_chunk(self, warnings: Sequence[tuple[tuple[str, str], Sequence[int], Sequence[str]]]) -> None:
        """Add one chunk's warnings: for each kind (column, check), its rows and their messages.

        Rows must come after every row added before; within the chunk they are sorted here (a row
        with two warnings keeps them in the order given).
        """
        rows, kinds, message_ids = [], [], []
        for kind, kind_rows, messages in warnings:
            if len(kind_rows) != len(messages):
                raise ValueError("each warning row needs its message")
            rows.append(np.asarray(kind_rows, dtype=np.int64))
            kinds.append(np.full(len(kind_rows), WARNING_KINDS.index(kind), dtype=np.uint8))
            message_ids.append(np.fromiter(map(self._message_id, messages), np.int32, len(messages)))
        if not rows or not sum(map(len, rows)):
            return
        chunk_rows = np.concatenate(rows)
        order = np.argsort(chunk_rows, kind="stable")
        if self._rows and chunk_rows[order[0]] < self._rows[-1][-1]:
            raise ValueError("chunks of warnings must come in row order")
        self._rows.append(chunk_rows[order])
        self._kinds.append(np.concatenate(kinds)[order])
        self._message_ids.append(np.concatenate(message_ids)[order])

    def _message_id(self, message: str) -> int:
        found = self._message_index.get(message)
        if found is None:
            found = self._message_index[message] = len(self._messages)
            self._messages.append(message)
        return found

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Each warning as {row, column, check, message}, in row order."""
        for rows, kinds, message_ids in zip(self._rows, self._kinds, self._message_ids, strict=True):
            for row, kind, message_id in zip(
                rows.tolist(), kinds.tolist(), message_ids.tolist(), strict=True
            ):
                column, check = WARNING_KINDS[kind]
                yield {"row": row, "column": column, "check": check, "message": self._messages[message_id]}

    def counts(self) -> Counter[tuple[str, str]]:
        """(column, check) -> how many rows carry that warning."""
        tally = np.bincount(np.concatenate(self._kinds), minlength=len(WARNING_KINDS)) if self._kinds else []
        return Counter({kind: int(count) for kind, count in zip(WARNING_KINDS, tally, strict=False) if count})
