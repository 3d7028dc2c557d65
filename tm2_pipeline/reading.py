"""Bytes of a clinic export -> a table of strings (`RawTable`), or `FileRefused` for the whole file.

Decisions, in the order they are taken:

- Refused before decoding: compressed archives (gzip, zip — an .xlsx workbook is one —, bz2, xz, 7z,
  zstd), known binary documents (old .xls/OLE2, PDF), NUL bytes outside UTF-16, and files where more
  than 5% of the bytes are control characters ("mostly non-text").
- Encoding: a byte-order mark decides (UTF-8, UTF-16 LE/BE: Excel "Unicode text"); otherwise strict
  UTF-8, then cp1252 (old Excel; it also holds every printable Latin-1 character). Bytes neither
  can decode are refused as `encoding`.
- An Excel `sep=X` first line names the delimiter and is dropped. Otherwise the delimiter is the one
  of `,` `;` tab whose split of the first non-blank line recognises the most TM2 column names
  (ties: the most fields, then that order).
- Rows are split by the `csv` module (quotes, doubled quotes, line breaks inside quotes, CRLF); it
  reports every row's field count, so a row with more or fewer fields than the header is kept and
  flagged `ragged` (the validator rejects it with `ragged_row`) instead of being silently padded.
- Blank records (an empty line, or only delimiters and spaces) are skipped and not counted in
  `rows`, but they keep their place in the numbering: `row` is the record's 1-based position after
  the header, so a row number always points at the same record a spreadsheet shows (row + 1).
- Header names: NFKC, BOM removed, trimmed, lower-cased, runs of spaces/hyphens/underscores read as
  one underscore ("Patient ID" -> patient_id). Unknown, unnamed and repeated columns are ignored
  (the first of a repeated name wins) and listed in `ignored_columns`.

Messages never contain cell values (they are PHI). Column names are echoed only from a line that
is recognisably a header (at least one required column found); a first line that is data is
described by its field count alone.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import re
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd

from tm2_pipeline.csv_blocks import TRANSPOSE_RECORDS, ColumnBuilder, byte_lines, text_lines
from tm2_pipeline.gc_paused import gc_paused

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
REFUSAL_REASONS = ("empty", "binary", "compressed", "encoding", "missing_columns", "malformed")

_COMPRESSED_MAGIC = (
    (b"\x1f\x8b", "a gzip archive"),
    (b"PK\x03\x04", "a zip archive (an .xlsx workbook is one: export the sheet as CSV)"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive"),
)
_BZIP2_MAGIC = re.compile(rb"BZh[1-9]1AY&SY")
_BINARY_MAGIC = (
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "an OLE2 document (an old .xls workbook?): export the sheet as CSV",
    ),
    (b"%PDF-", "a PDF document"),
)
# C0 control bytes that never appear in text (tab, LF, FF, CR and the DOS end-of-file mark do).
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 26)) + b"\x7f"
_NON_CONTROL_BYTES = bytes(b for b in range(256) if b not in _CONTROL_BYTES)
_CONTROL_TEXT = re.compile("[" + re.escape(_CONTROL_BYTES.decode("ascii")) + "]")
_MAX_CONTROL_SHARE = 0.05
_SEP_DIRECTIVE = re.compile(r"\Asep=([,;\t])[ \t]*(?:\r\n|\r|\n|\Z)", re.IGNORECASE)
_HEADER_SEPARATORS = re.compile(r"[\s_-]+")
# Rows per RawTable when a file is read in chunks (memory stays flat in the file's length).
CHUNK_ROWS = 100_000
# Encodings whose bytes are decoded block by block (utf-8-sig: the BOM is skipped by offset).
_BLOCK_CODECS = {"utf-8": "utf-8", "utf-8-sig": "utf-8", "cp1252": "cp1252"}


class FileRefused(Exception):
    """The whole file cannot be read as a TM2 export; `reason` is one of `REFUSAL_REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


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


def inspect_tm2_bytes(data: bytes) -> Tm2FileInfo:
    """Every whole-file refusal of `read_tm2_bytes` (empty, binary, compressed, encoding,
    missing_columns), the same `FileRefused`, without splitting the data rows.

    A CSV structure that breaks further down (`malformed`: a runaway quote) shows only when the rows
    are read: `read_tm2_bytes` and `Tm2Rows.chunks` refuse it.
    """
    return Tm2Rows(data).info


class Tm2Rows:
    """A readable export, header mapped: its rows come as RawTables of at most `rows_per_chunk` rows.

    Constructing it takes every whole-file decision (and raises `FileRefused`); `chunks` may be
    iterated once. Row numbers (`row`) run on across chunks.
    """

    def __init__(self, data: bytes) -> None:
        _refuse_non_text(data)
        decoded, encoding = _decode(data)
        text = decoded.lstrip("\ufeff")
        leading_boms = len(decoded) - len(text)
        text = text.rstrip("\x1a")
        trailing_eofs = len(decoded) - leading_boms - len(text)
        del decoded
        if not text or text.isspace():
            raise FileRefused("empty", "the file has no header row (it is empty or only whitespace)")
        directive = _SEP_DIRECTIVE.match(text)
        if directive:
            delimiter = directive.group(1)
            text = text[directive.end() :]
        else:
            delimiter = _detect_delimiter(_first_non_blank_line(text))
        if encoding.startswith("utf-16"):
            lines = text_lines(text)
        else:
            # The rows are decoded again block by block from the bytes: the decoded text of the whole
            # file (2 bytes per character once one Devanagari name is in it) is not kept.
            start = (3 if encoding == "utf-8-sig" else 0) + 3 * leading_boms
            start += directive.end() if directive else 0  # ASCII: one byte per character
            lines = byte_lines(data, start, len(data) - trailing_eofs, _BLOCK_CODECS[encoding])
        del text
        self._reader = csv.reader(lines, delimiter=delimiter)
        header = _read_header(self._reader)
        self._column_index, ignored = _map_header(header)
        self.info = Tm2FileInfo(
            encoding=encoding, delimiter=delimiter, ignored_columns=tuple(ignored), header_fields=len(header)
        )

    def chunks(self, rows_per_chunk: int = CHUNK_ROWS) -> Iterator[RawTable]:
        """The rows after the header, `rows_per_chunk` csv records at a time (at least one table)."""
        position = 0  # csv records read after the header, blank ones included
        while True:
            with gc_paused():  # a million row lists, none in a cycle (4x faster)
                columns = ColumnBuilder(self._column_index, self.info.header_fields, TM2_COLUMNS)
                wanted = rows_per_chunk
                while wanted > 0:
                    records: list[list[str]] = []
                    try:
                        records.extend(itertools.islice(self._reader, min(wanted, TRANSPOSE_RECORDS)))
                    except csv.Error as error:
                        # csv's own messages describe structure only (field limit), never values.
                        raise FileRefused(
                            "malformed",
                            f"the CSV structure breaks at data row {position + len(records) + 1}: {error}",
                        ) from None
                    if not records:
                        break
                    columns.add(records, first_position=position + 1)
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
            if wanted > 0:
                return


def _read_header(reader: Iterator[list[str]]) -> list[str]:
    """The first non-blank record (blank records before it do not count as data rows)."""
    try:
        for fields in reader:
            if not _is_blank(fields):
                return fields
    except csv.Error as error:
        raise FileRefused("malformed", f"the CSV structure breaks at data row 1: {error}") from None
    raise FileRefused("empty", "the file has no header row")


def _refuse_non_text(data: bytes) -> None:
    if not data or data.isspace():  # as `not data.strip()`, without copying the file
        raise FileRefused("empty", "the file is empty (0 bytes or only whitespace)")
    for magic, kind in _COMPRESSED_MAGIC:
        if data.startswith(magic):
            raise FileRefused("compressed", f"the file is {kind}, not a CSV text file")
    if _BZIP2_MAGIC.match(data):
        raise FileRefused("compressed", "the file is a bzip2 archive, not a CSV text file")
    for magic, kind in _BINARY_MAGIC:
        if data.startswith(magic):
            raise FileRefused("binary", f"the file is {kind}, not a CSV text file")


def _decode(data: bytes) -> tuple[str, str]:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16-le" if data.startswith(codecs.BOM_UTF16_LE) else "utf-16-be"
        try:
            text = data[2:].decode(encoding)
        except UnicodeDecodeError:
            raise FileRefused(
                "encoding", "the file starts with a UTF-16 byte-order mark but is not UTF-16"
            ) from None
        if "\x00" in text or _control_share(len(_CONTROL_TEXT.findall(text)), len(text)):
            raise FileRefused("binary", "the file is not text (NUL or control characters in UTF-16 data)")
        return text, encoding
    if b"\x00" in data:
        raise FileRefused(
            "binary",
            "the file contains NUL bytes: it is binary, or UTF-16 without a byte-order mark "
            "(re-export as CSV UTF-8)",
        )
    if _control_share(len(data.translate(None, _NON_CONTROL_BYTES)), len(data)):
        raise FileRefused("binary", "the file is mostly non-text (control bytes), not a CSV export")
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[3:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError:
            raise FileRefused(
                "encoding", "the file starts with a UTF-8 byte-order mark but is not UTF-8"
            ) from None
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise FileRefused("encoding", "the file is neither UTF-8, UTF-16 (with BOM) nor Windows-1252 text")


def _control_share(control_count: int, total: int) -> bool:
    return total > 0 and control_count / total > _MAX_CONTROL_SHARE


def _first_non_blank_line(text: str) -> str:
    for line in text_lines(text):
        if line.strip(" \t\r\n,;"):
            return line
    return ""


def _detect_delimiter(header_line: str) -> str:
    def score(delimiter: str) -> tuple[int, int, int]:
        fields = next(csv.reader([header_line.rstrip("\r\n")], delimiter=delimiter), [])
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
        else:
            ignored.append(field.strip())
    missing = [name for name in REQUIRED_COLUMNS if name not in column_index]
    if missing:
        if len(missing) == len(REQUIRED_COLUMNS):
            # No known column at all: the first line is probably data, whose values must not be echoed.
            raise FileRefused(
                "missing_columns",
                f"no TM2 header row: the first line has {len(header)} field(s) and none is a required "
                f"column; required columns: {', '.join(REQUIRED_COLUMNS)}",
            )
        found = ", ".join(name[:40] or "(unnamed)" for name in names)
        raise FileRefused(
            "missing_columns",
            f"missing required column(s): {', '.join(missing)}; found columns: {found}",
        )
    return column_index, ignored
