"""Bytes of a clinic export -> a table of strings (`RawTable`), or `FileRefused` for the whole file.

Decisions, in the order they are taken:

- Whether the bytes are text, and in which encoding: `file_text.py`.
- An Excel `sep=X` first line names the delimiter and is dropped. Otherwise the delimiter is the one
  of `,` `;` tab whose split of the first non-blank line recognises the most TM2 column names
  (ties: the most fields, then that order).
- Rows are split by the `csv` module (quotes, doubled quotes, line breaks inside quotes, CRLF); it
  reports every row's field count, so a row with more or fewer fields than the header is kept and
  flagged `ragged` (the validator rejects it with `ragged_row`) instead of being silently padded.
- A CR alone ends lines only in an old Mac export (its first line ends so); in any other file it is
  part of its field, so one row is never cut in two (`csv_blocks.LineSplitter`).
- Blank records (an empty line, or only delimiters and spaces) are skipped and not counted in
  `rows`, but they keep their place in the numbering: `row` is the record's 1-based position after
  the header, so a row number always points at the same record a spreadsheet shows (row + 1).
- Header names: NFKC, BOM removed, trimmed, lower-cased, runs of spaces/hyphens/underscores read as
  one underscore ("Patient ID" -> patient_id). Unknown, unnamed and repeated columns are ignored
  (the first of a repeated name wins) and listed in `ignored_columns`.

Messages never contain cell values (they are PHI). Column names are echoed only from a line that
is recognisably a header (at least one required column found), and only names that read like
column names (no digits; a data row run into the header line puts ids and dates there); others are
named by position. A first line that is data is described by its field count alone.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import pandas as pd

from tm2_pipeline.csv_blocks import TRANSPOSE_RECORDS, ColumnBuilder
from tm2_pipeline.file_text import REFUSAL_REASONS, FileRefused, decoded_lines
from tm2_pipeline.gc_paused import gc_paused

__all__ = [  # FileRefused and its reasons are read here by every caller of the reader
    "CHUNK_ROWS",
    "DELIMITERS",
    "REFUSAL_REASONS",
    "TM2_COLUMNS",
    "FileRefused",
    "RawTable",
    "Tm2FileInfo",
    "Tm2Rows",
    "canonical_column_name",
    "inspect_tm2_file",
    "read_tm2_bytes",
]

REQUIRED_COLUMNS = (
    "patient_id",
    "tm2_code",
    "condition_name",
    "system_type",
    "severity",
    "diagnosis_date",
    "practitioner_id",
)
OPTIONAL_COLUMNS = ("namaste_code",)
TM2_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
DELIMITERS = (",", ";", "\t")

_NAME_PUNCTUATION = frozenset(" _.()/-")
# A NUL never reaches the reader from a file (refused before decoding), so it marks the end.
_END = "\x00"
_END_MARK = _END + "\n"
_MARKS = ("Mn", "Mc")  # combining marks: Devanagari and Tamil vowel signs
# Matched against the text's first line.
_SEP_DIRECTIVE = re.compile(r"\Asep=([,;\t])[ \t]*(?:\r\n|\r|\n|\Z)", re.IGNORECASE)
_HEADER_SEPARATORS = re.compile(r"[\s_-]+")
# Rows per RawTable when a file is read in chunks (memory stays flat in the file's length).
CHUNK_ROWS = 100_000
# The csv module refuses a value past 131,072 characters by default, and with it the whole file: a
# long value is one row's problem (rejected `too_long`), while the limit still bounds what a quote
# left open reads into memory before the file is refused.
FIELD_LIMIT_CHARS = 16 * 1024 * 1024
csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT_CHARS))


@dataclass(frozen=True)
class RawTable:
    """The export as read: every TM2 column as str, plus `row`, `field_count` and `ragged`.

    `frame` has the columns of `TM2_COLUMNS` (namaste_code is "" when the file has no such column),
    `row` (int, 1-based position after the header), `field_count` (int, as the csv module split the
    row) and `ragged` (bool, field_count differs from the header's). Ragged rows hold their fields
    by position, padded with "".
    """

    frame: pd.DataFrame
    encoding: str
    delimiter: str
    ignored_columns: tuple[str, ...]
    header_fields: int

    @property
    def rows(self) -> int:
        """Data rows read (header and blank records excluded, ragged rows included)."""
        return len(self.frame)


def canonical_column_name(name: str) -> str:
    """'  Patient-ID ' -> 'patient_id': NFKC, BOM removed, trimmed, lower-case, separators as '_'."""
    text = unicodedata.normalize("NFKC", name).replace("\ufeff", "").strip().lower()
    return _HEADER_SEPARATORS.sub("_", text).strip("_")


@dataclass(frozen=True)
class Tm2FileInfo:
    """What the header and the bytes say about a readable export (no data row looked at)."""

    encoding: str
    delimiter: str
    ignored_columns: tuple[str, ...]
    header_fields: int


def read_tm2_bytes(data: bytes) -> RawTable:
    """Decode, split and map a clinic export; raise `FileRefused` when it is not a readable TM2 CSV."""
    (table,) = Tm2Rows(data).chunks(sys.maxsize)
    return table


def inspect_tm2_file(source: bytes | BinaryIO) -> Tm2FileInfo:
    """Every whole-file refusal of `read_tm2_bytes` (empty, binary, compressed, encoding,
    missing_columns), the same `FileRefused`, without splitting the data rows.

    A CSV structure that breaks further down (`malformed`: a runaway quote) shows only when the rows
    are read: `read_tm2_bytes` and `Tm2Rows.chunks` refuse it.
    """
    return Tm2Rows(source).info


class Tm2Rows:
    """A readable export, header mapped: its rows come as RawTables of at most `rows_per_chunk` rows.

    `source` is the file's bytes or a seekable binary file. A file is read a block at a time and
    must stay open while `chunks` runs; only UTF-16 is decoded whole (Excel's "Unicode text" export,
    which Excel caps at 1,048,576 rows). Constructing it takes every whole-file decision (and
    raises `FileRefused`); `chunks` may be iterated once. Row numbers (`row`) run on across chunks.
    """

    def __init__(self, source: bytes | BinaryIO) -> None:
        stream = io.BytesIO(source) if isinstance(source, bytes) else source
        encoding, lines, self._splitter = decoded_lines(stream)
        first = next(lines, None)
        directive = _SEP_DIRECTIVE.match(first) if first is not None else None
        # Lines up to the first non-blank one (the header, or data), kept to go to the csv reader.
        leading = [] if directive or first is None else [first]
        while not (leading and leading[-1].strip(" \t\r\n,;")):
            line = next(lines, None)
            if line is None:
                break
            leading.append(line)
        if not directive and all(line.isspace() for line in leading):
            raise FileRefused("empty", "the file has no header row (it is empty or only whitespace)")
        if directive:
            delimiter = directive.group(1)
        else:
            delimiter = _detect_delimiter(leading[-1] if leading[-1].strip(" \t\r\n,;") else "")
        # The end marker comes out as a record of its own, unless a quote left open swallowed it.
        self._reader = csv.reader(itertools.chain(leading, lines, [_END_MARK]), delimiter=delimiter)
        header = self._splitter.restore([_read_header(self._reader)])[0]
        self._column_index, ignored = _map_header(header)
        self.info = Tm2FileInfo(
            encoding=encoding, delimiter=delimiter, ignored_columns=tuple(ignored), header_fields=len(header)
        )

    def chunks(self, rows_per_chunk: int = CHUNK_ROWS) -> Iterator[RawTable]:
        """The rows after the header, `rows_per_chunk` csv records at a time (at least one table)."""
        position = 0  # csv records read after the header, blank ones included
        while True:
            with gc_paused():  # a million row lists, none in a cycle (4x faster)
                columns = ColumnBuilder(
                    self._column_index, self.info.header_fields, TM2_COLUMNS, self.info.delimiter
                )
                wanted = rows_per_chunk
                while wanted > 0:
                    records: list[list[str]] = []
                    try:
                        records.extend(itertools.islice(self._reader, min(wanted, TRANSPOSE_RECORDS)))
                    except csv.Error as error:
                        # csv's own messages describe structure only (field limit), never values.
                        raise FileRefused(
                            "malformed",
                            f"the CSV structure breaks at data row {position + len(records) + 1}: "
                            + _explained(error),
                        ) from None
                    if records and records[-1] and _END in records[-1][-1]:
                        _drop_end_mark(records, first_position=position + 1)
                    if not records:
                        break
                    columns.add(self._splitter.restore(records), first_position=position + 1)
                    if columns.swallowed is not None:
                        raise _swallowed(*columns.swallowed)
                    position += len(records)
                    wanted -= len(records)
                if wanted == rows_per_chunk and position:
                    return  # the previous chunk ended exactly at the end of the file
                table = RawTable(
                    frame=columns.frame(),
                    encoding=self.info.encoding,
                    delimiter=self.info.delimiter,
                    ignored_columns=self.info.ignored_columns,
                    header_fields=self.info.header_fields,
                )
            yield table
            del table  # the caller is done with it: not alive while the next chunk is read
            if wanted > 0:
                return


def _swallowed(position: int, column: str, lines: int) -> FileRefused:
    """Refused, as for a quote never closed: the rows inside cannot be told apart, and one record
    holding thousands of them would count as one rejected row."""
    return FileRefused(
        "malformed",
        f"a quoted value in data row {position} ({column}) runs over {lines} lines that read like rows "
        "of the file: a quote opened by mistake and closed only by a later one. Remove it (or double "
        "it) and land the file again",
    )


def _explained(error: csv.Error) -> str:
    if "field limit" in str(error):
        return f"a value longer than {FIELD_LIMIT_CHARS:,} characters (a quote opened and never closed?)"
    return str(error)


def _drop_end_mark(records: list[list[str]], *, first_position: int) -> None:
    """Remove the end marker (the reader's last record); refuse the file if a quote swallowed it.

    Python's csv module, when not strict, reads a quote that is never closed to the end of the
    file: every row after it would vanish into one cell (and the strict mode refuses too much)."""
    last = records[-1]
    if last == [_END]:
        records.pop()
        return
    raise FileRefused(
        "malformed",
        f"a quoted field opened in data row {first_position + len(records) - 1} is never closed: "
        "the rest of the file would be read as one cell",
    )


def _read_header(reader: Iterator[list[str]]) -> list[str]:
    """The first non-blank record (blank records before it do not count as data rows)."""
    try:
        for fields in reader:
            if fields and _END in fields[-1]:
                if fields == [_END]:
                    break  # the end of the file: no header
                raise FileRefused("malformed", "a quoted field opened in the header row is never closed")
            if not _is_blank(fields):
                return fields
    except csv.Error as error:
        raise FileRefused("malformed", f"the CSV structure breaks at data row 1: {error}") from None
    raise FileRefused("empty", "the file has no header row")


def _detect_delimiter(header_line: str) -> str:
    def score(delimiter: str) -> tuple[int, int, int]:
        try:
            fields = next(csv.reader([header_line.rstrip("\r\n")], delimiter=delimiter), [])
        except csv.Error as error:  # a first line past the csv field limit (or broken quoting)
            raise FileRefused(
                "malformed", f"the first line cannot be read as CSV: {_explained(error)}"
            ) from None
        known = len({canonical_column_name(field) for field in fields} & set(TM2_COLUMNS))
        return known, len(fields), -DELIMITERS.index(delimiter)

    return max(DELIMITERS, key=score)


def _is_blank(fields: list[str]) -> bool:
    return not "".join(fields).strip()


def _map_header(header: list[str]) -> tuple[dict[str, int], list[str]]:
    column_index: dict[str, int] = {}
    ignored: list[str] = []
    names = [canonical_column_name(field) for field in header]
    for i, (field, name) in enumerate(zip(header, names, strict=True)):
        if name in TM2_COLUMNS and name not in column_index:
            column_index[name] = i
        elif not name:
            ignored.append(f"(unnamed column {i + 1})")
        elif _nameable(field, name):
            ignored.append(field.strip())
        else:
            ignored.append(f"(column {i + 1}: name not shown)")
    missing = [name for name in REQUIRED_COLUMNS if name not in column_index]
    if missing:
        if len(missing) == len(REQUIRED_COLUMNS):
            # No known column at all: the first line is probably data, whose values must not be echoed.
            raise FileRefused(
                "missing_columns",
                f"no TM2 header row: the first line has {len(header)} field(s) and none is a required "
                f"column; required columns: {', '.join(REQUIRED_COLUMNS)}",
            )
        found = ", ".join(
            (name if _nameable(field, name) else f"(column {i + 1})") if name else "(unnamed)"
            for i, (field, name) in enumerate(zip(header, names, strict=True))
        )
        raise FileRefused(
            "missing_columns",
            f"missing required column(s): {', '.join(missing)}; found columns: {found}",
        )
    return column_index, ignored


def _nameable(field: str, name: str) -> bool:
    """Whether a header field may be named in messages: a TM2 column, or text that reads like a
    column name (no digits, at most 40 characters). A data row run into the header line (its line
    break lost) puts ids, dates and codes among the names, and those must never be echoed."""
    if name in TM2_COLUMNS:
        return True
    text = field.strip()
    return (
        0 < len(text) <= 40
        and text[0].isalpha()
        # Letters (and their combining marks), spaces and a little punctuation: no digits.
        and all(c.isalpha() or c in _NAME_PUNCTUATION or unicodedata.category(c) in _MARKS for c in text)
    )
