"""Feeding the csv module a large export a block at a time, and its records turned into columns.

The file is read from disk a block at a time (its decoded text would take up to 4 bytes per
character besides its bytes), and transposing a million csv records at once is twice as slow as a
few thousand at a time (the lists stay in the CPU cache): `reading.Tm2Rows` reads through these
helpers so its memory does not grow with the file.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import pandas as pd

from tm2_pipeline.codes import is_code_shaped

# Text goes to the csv module in blocks of about this many characters, each cut after a "\n".
BLOCK_CHARS = 1 << 20
# csv records turned into columns at a time (see ColumnBuilder).
TRANSPOSE_RECORDS = 16_384


# Stands for a CR alone inside a line while the csv module reads it: no strict decoder (UTF-8,
# cp1252, UTF-16) ever produces a lone surrogate, so the mark cannot be confused with text.
LONE_CR_MARK = "\ud800"
_LONE_CR = re.compile(r"\r(?!\n|\Z)")


class LineSplitter:
    """Cuts decoded text into the lines the csv module reads, the way the file ends its lines.

    An old Mac export ends every line in a CR alone (`cr_ends_lines`). In any other file a CR alone
    is part of a field (a value pasted from an old Mac app, written unquoted): cutting the line
    there would make two records of one row, a truncated value accepted and its rest rejected as a
    row of its own. The csv module refuses a CR inside an unquoted field, so such a CR goes through
    it as `LONE_CR_MARK`, and `restore` puts it back into the fields.
    """

    def __init__(self, *, cr_ends_lines: bool) -> None:
        self.cr_ends_lines = cr_ends_lines
        self.marked = False  # whether any CR alone was marked (restore has work to do)

    def lines(self, text: str) -> io.StringIO:
        """The lines of `text` (ends kept), as `io.StringIO(text, newline="")` yields them, except
        that a CR alone ends a line only in an old Mac export. A CR at the very end of `text` ends
        the last line in any file."""
        if not self.cr_ends_lines and text.count("\r") != text.count("\r\n"):
            text, count = _LONE_CR.subn(LONE_CR_MARK, text)
            self.marked = self.marked or count > 0
        return io.StringIO(text, newline="")

    def restore(self, records: list[list[str]]) -> list[list[str]]:
        """`records` as the file wrote them: every `LONE_CR_MARK` a CR again."""
        if not self.marked:
            return records
        return [
            [field.replace(LONE_CR_MARK, "\r") for field in record]
            if any(LONE_CR_MARK in field for field in record)
            else record
            for record in records
        ]


# Excel's `sep=` line, ended otherwise than by a CR alone (BOMs before it, read as text or as latin-1).
_SEP_LINE = re.compile(r"\A(?:\ufeff|\xef\xbb\xbf)*sep=[,;\t][ \t]*(?:\r\n|\n)", re.IGNORECASE)


def first_line_ends_in_cr_alone(head: str) -> bool:
    """Whether the first line end in `head` (the start of a file's text) is a CR alone. A `sep=`
    line does not decide: the rows' own line ends do (it may have been written apart from them)."""
    if directive := _SEP_LINE.match(head):
        head = head[directive.end() :]
    cr, lf = head.find("\r"), head.find("\n")
    return 0 <= cr < len(head) - 1 and (lf < 0 or cr < lf) and head[cr + 1] != "\n"


def text_lines(text: str, splitter: LineSplitter) -> Iterator[str]:
    """The lines of `text` as `splitter` cuts them (ends kept: LF, CRLF, CR), a block at a time: a
    StringIO of the whole text would hold it at 4 bytes per character."""
    start, size = 0, len(text)
    while start < size:
        cut = text.find("\n", start + BLOCK_CHARS)
        end = size if cut < 0 else cut + 1
        yield from splitter.lines(text[start:end])
        start = end


def byte_lines(
    stream: BinaryIO, start: int, end: int, encoding: str, splitter: LineSplitter
) -> Iterator[str]:
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
            yield from splitter.lines(block.decode(encoding))


# The column a ragged row's fields past the header's width go to (only when some row has them).
EXTRA_FIELDS = "extra_fields"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def swallowed_rows(
    fields: list[str], width: int, delimiter: str, code_index: int | None
) -> tuple[int, int] | None:
    """(field position, lines) when a field of this record holds rows of the file: a quote opened
    by mistake and closed by a later one (the csv module reads all between as one value).

    A later line of the value then reads like a row: a whole one (the header's delimiters), or, last,
    the start of one up to this field. Either is told by a code-shaped value where the file has its
    codes, or by the value's first line holding exactly the delimiters that end the record's own row.
    A quoted value meant to span lines (a long note) matches that by chance almost never.
    """
    for position, value in enumerate(fields):
        if "\n" not in value and "\r" not in value:
            continue
        lines = _LINE_BREAK.split(value)
        own_row_ends = lines[0].count(delimiter) == width - position - 1
        later = [(line, width - 1) for line in lines[1:-1]] + [(lines[-1], position)]
        for line, delimiters in later:
            if line.count(delimiter) != delimiters:
                continue
            if own_row_ends or _code_at(line.split(delimiter), code_index):
                return position, len(lines)
    return None


def _code_at(parts: list[str], code_index: int | None) -> bool:
    return (
        code_index is not None
        and code_index < len(parts)
        and is_code_shaped(parts[code_index].strip().upper())
    )


class ColumnBuilder:
    """Collects csv records as TM2 columns, a few thousand records at a time.

    Transposing a small batch at once keeps its lists in the CPU cache (a million at once is twice
    as slow), and only the batch's lists are alive at any time.
    """

    def __init__(
        self, column_index: dict[str, int], width: int, columns: tuple[str, ...], delimiter: str = ","
    ) -> None:
        self.column_index = column_index  # column name -> its field position
        self.width = width  # the header's field count
        self.delimiter = delimiter
        self.columns = columns  # the frame's text columns, in order ("" where the file has none)
        self.values: dict[str, list[str]] = {name: [] for name in column_index}
        self.positions: list[np.ndarray] = []
        self.field_counts: list[np.ndarray] = []
        self.extra_fields: dict[int, list[str]] = {}  # position -> fields past the header's width
        self._names = {index: name for name, index in column_index.items()}
        # The first record holding rows of the file (see `swallowed_rows`): (position, column, lines).
        self.swallowed: tuple[int, str, int] | None = None

    def add(self, records: list[list[str]], first_position: int) -> None:
        positions = np.arange(first_position, first_position + len(records), dtype=np.int64)
        texts = list(map("".join, records))
        # Blank records (no fields, or only spaces) are dropped; their position stays counted.
        kept = np.fromiter(map(bool, map(str.strip, texts)), dtype=bool, count=len(records))
        batch_text = "".join(texts)  # one scan for the rare batch with a value on several lines
        if "\n" in batch_text or "\r" in batch_text:
            for i, text in enumerate(texts):
                if "\n" in text or "\r" in text:
                    self._look_for_swallowed_rows(records[i], first_position + i)
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

    def _look_for_swallowed_rows(self, record: list[str], position: int) -> None:
        found = swallowed_rows(record, self.width, self.delimiter, self.column_index.get("tm2_code"))
        if found and self.swallowed is None:
            field, lines = found
            self.swallowed = (position, self._names.get(field, f"field {field + 1}"), lines)

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
