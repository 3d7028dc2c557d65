"""Feeding the csv module a large export a block at a time, and its records turned into columns.

The file is read from disk a block at a time (its decoded text would take up to 4 bytes per
character besides its bytes), and transposing a million csv records at once is twice as slow as a
few thousand at a time (the lists stay in the CPU cache): `reading.Tm2Rows` reads through these
helpers so its memory does not grow with the file.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from typing import BinaryIO

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


def byte_lines(stream: BinaryIO, start: int, end: int, encoding: str) -> Iterator[str]:
    """The lines of bytes `start:end` of `stream`, decoded, as `text_lines` gives them: read and
    decoded a block at a time, so the file is never in memory whole. Blocks are cut after a b"\\n",
    which is always a whole character in UTF-8 and cp1252 (a file whose lines end in CR alone has
    no such cut and is decoded as one block)."""
    stream.seek(start)
    remaining = end - start
    carry = b""
    while remaining > 0:
        block = stream.read(min(BLOCK_CHARS, remaining))
        remaining = remaining - len(block) if block else 0  # a shorter file than `end` ends here
        block = carry + block
        cut = block.rfind(b"\n") + 1 if remaining > 0 else len(block)
        block, carry = block[:cut], block[cut:]
        if block:
            yield from io.StringIO(block.decode(encoding), newline="")


# The column a ragged row's fields past the header's width go to (only when some row has them).
EXTRA_FIELDS = "extra_fields"


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
        self.extra_fields: dict[int, list[str]] = {}  # position -> fields past the header's width

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
            if len(records[i]) > width:  # kept for the quarantine: a rejected row loses nothing
                self.extra_fields[int(positions[i])] = records[i][width:]
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
        frame = pd.DataFrame(data)
        if self.extra_fields:
            frame[EXTRA_FIELDS] = frame["row"].map(self.extra_fields)
        return frame
