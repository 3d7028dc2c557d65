"""Feeding the csv module a large export a block at a time, and its records turned into columns.

An `io.StringIO` of a whole file holds it at 4 bytes per character, and transposing a million csv
records at once is twice as slow as a few thousand at a time (the lists stay in the CPU cache):
`reading.Tm2Rows` reads through these helpers so its memory does not grow with the file.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator

import numpy as np
import pandas as pd

# Text goes to the csv module in blocks of about this many characters, each cut after a "\n".
BLOCK_CHARS = 1 << 20
# csv records turned into columns at a time (see ColumnBuilder).
TRANSPOSE_RECORDS = 16_384


def text_lines(text: str) -> Iterator[str]:
    """The lines of `text` exactly as `io.StringIO(text, newline="")` yields them (ends kept: LF, CRLF,
    CR), a block at a time: a StringIO of the whole text would hold it at 4 bytes per character."""
    start, size = 0, len(text)
    while start < size:
        cut = text.find("\n", start + BLOCK_CHARS)
        end = size if cut < 0 else cut + 1
        yield from io.StringIO(text[start:end], newline="")
        start = end


def byte_lines(data: bytes, start: int, end: int, encoding: str) -> Iterator[str]:
    """The lines of `data[start:end].decode(encoding)` as `text_lines` gives them, decoded a block at a
    time; blocks are cut after a b"\\n", which is always a whole character in UTF-8 and cp1252."""
    view = memoryview(data)
    while start < end:
        cut = data.find(b"\n", start + BLOCK_CHARS, end)
        stop = end if cut < 0 else cut + 1
        yield from io.StringIO(str(view[start:stop], encoding), newline="")
        start = stop


class ColumnBuilder:
    """Collects csv records as TM2 columns, a few thousand records at a time.

    Transposing a small batch at once keeps its lists in the CPU cache (a million at once is twice
    as slow), and only the batch's lists are alive at any time.
    """

    def __init__(self, column_index: dict[str, int], width: int, columns: tuple[str, ...]) -> None:
        self.column_index = column_index  # column name -> its field position
        self.width = width  # the header's field count
        self.columns = columns  # the frame's text columns, in order ("" where the file has none)
        self.values: dict[str, list[str]] = {name: [] for name in column_index}
        self.positions: list[np.ndarray] = []
        self.field_counts: list[np.ndarray] = []

    def add(self, records: list[list[str]], first_position: int) -> None:
        positions = np.arange(first_position, first_position + len(records), dtype=np.int64)
        # Blank records (no fields, or only spaces) are dropped; their position stays counted.
        kept = np.fromiter(map(bool, map(str.strip, map("".join, records))), dtype=bool, count=len(records))
        if not kept.all():
            records = list(itertools.compress(records, kept))
            positions = positions[kept]
        field_counts = np.fromiter(map(len, records), dtype=np.int64, count=len(records))
        width = self.width
        for i in np.flatnonzero(field_counts != width):
            records[i] = (records[i] + [""] * width)[:width]  # ragged: fields by position, padded
        if records:
            fields = list(zip(*records, strict=True))
            for name, index in self.column_index.items():
                self.values[name].extend(fields[index])
        self.positions.append(positions)
        self.field_counts.append(field_counts)

    def frame(self) -> pd.DataFrame:
        field_counts = np.concatenate(self.field_counts) if self.field_counts else np.empty(0, np.int64)
        count = len(field_counts)
        data: dict[str, object] = {}
        for name in self.columns:
            values = self.values.get(name)
            data[name] = np.array(values, dtype=object) if values is not None else np.full(count, "", object)
        data["row"] = np.concatenate(self.positions) if self.positions else np.empty(0, np.int64)
        data["field_count"] = field_counts
        data["ragged"] = field_counts != self.width
        return pd.DataFrame(data)
