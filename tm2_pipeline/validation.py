"""The validation facade: a RawTable (or bytes) -> accepted records, rejected rows with reasons,
duplicates and warnings, with the accounting invariant rows == accepted + duplicates + rejected.

Steps: ragged rows are rejected (`ragged_row`) without looking at their values (their fields are
probably shifted); the rest are normalized (`normalize.py`), checked by the pandera rules
(`schema.py`, one reason per failing column), and the valid ones become records (`records.py`),
first row of each record key wins. Warnings (a filled condition_name: check `missing` on column
condition_name; `namaste_mismatch`) are reported for accepted records only: a row that is rejected
or dropped as a duplicate is not stored, so its warnings would be noise.

A ragged row's reason names column "*" (the whole row). `rejected_rows[i]["values"]` holds the
cells as read: PHI, for the quarantine collection only. Every message (reasons, warnings) is free
of patient and practitioner identifiers.
"""

from __future__ import annotations

import datetime
import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tm2_pipeline.codes import is_code_shaped
from tm2_pipeline.csv_blocks import EXTRA_FIELDS
from tm2_pipeline.duplicate_rows import DuplicateRows
from tm2_pipeline.identity import clean_token
from tm2_pipeline.key_index import KeyIndex, key_digests
from tm2_pipeline.normalize import explain, namaste_mismatch_message, namaste_mismatches, normalize_tm2_frame
from tm2_pipeline.reading import CHUNK_ROWS, TM2_COLUMNS, RawTable, Tm2FileInfo, Tm2Rows
from tm2_pipeline.records import ACCEPTED_RECORD_COLUMNS, build_accepted_records
from tm2_pipeline.row_warnings import RowWarnings
from tm2_pipeline.schema import row_problems

# Row numbers listed in metadata at most (the full lists are in the quarantine and the result).
ROW_LIST_LIMIT = 200
# Reasons that make the rejected code worth counting in the quality report.
_CODE_CHECKS = ("unknown_code", "tm1_code")


@dataclass
class ValidationResult:
    """The outcome of validating one file; `accepted_records` has exactly `ACCEPTED_RECORD_COLUMNS`."""

    rows: int
    accepted: int
    duplicates: int
    rejected: int
    # None when the records went to a sink chunk by chunk (see validate_tm2_export).
    accepted_records: pd.DataFrame | None
    # Empty when the rejected rows went to a reject sink chunk by chunk.
    rejected_rows: list[dict[str, Any]] = field(default_factory=list)
    duplicate_rows: DuplicateRows = field(default_factory=DuplicateRows)
    warnings: RowWarnings = field(default_factory=RowWarnings)
    encoding: str = "utf-8"
    delimiter: str = ","
    ignored_columns: list[str] = field(default_factory=list)
    # Accepted records per system_type and per WHO block (the quality report's tallies).
    accepted_per_system: dict[str, int] = field(default_factory=dict)
    accepted_per_block: dict[str, int] = field(default_factory=dict)
    # Rejected rows per (column, check) of each reason, and per rejected code (canonical, or its
    # length when it is not code-shaped); the row numbers of the first ROW_LIST_LIMIT rejected rows.
    rejection_reasons: dict[tuple[str, str], int] = field(default_factory=dict)
    rejected_codes: dict[str, int] = field(default_factory=dict)
    first_rejected_rows: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.rows != self.accepted + self.duplicates + self.rejected:
            raise AssertionError(
                f"validation accounting broken: {self.rows} rows != {self.accepted} accepted + "
                f"{self.duplicates} duplicates + {self.rejected} rejected"
            )


def validate_tm2_export(
    source: Path | bytes,
    *,
    today: datetime.date,
    day_first: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    sink: AcceptedSink | None = None,
    reject_sink: RejectSink | None = None,
) -> ValidationResult:
    """Read and validate a clinic export (a file, or its bytes); raises `reading.FileRefused` for an
    unreadable one.

    A file is read a block at a time, and the rows are validated `chunk_rows` csv records at a
    time, so the working memory does not grow with the file. The accepted records of each chunk go
    to `sink` and its rejected rows to `reject_sink` when these are given (then `accepted_records`
    is None and `rejected_rows` empty, and what grows with the file is the index of accepted keys,
    the duplicates and the warnings); otherwise they are gathered into the result. A key seen in an
    earlier chunk makes a row a duplicate exactly as within one chunk.
    """
    if isinstance(source, bytes):
        return _validate_rows(Tm2Rows(source), today, day_first, chunk_rows, sink, reject_sink)
    with source.open("rb") as stream:
        return _validate_rows(Tm2Rows(stream), today, day_first, chunk_rows, sink, reject_sink)


def _validate_rows(
    rows: Tm2Rows,
    today: datetime.date,
    day_first: bool,
    chunk_rows: int,
    sink: AcceptedSink | None,
    reject_sink: RejectSink | None,
) -> ValidationResult:
    collector = _Collector(rows.info, sink, reject_sink)
    for raw in rows.chunks(chunk_rows):
        collector.add(raw, today=today, day_first=day_first)
        del raw  # else it lives on while the next chunk is read
    return collector.result()


def validate_tm2_table(raw: RawTable, *, today: datetime.date, day_first: bool = True) -> ValidationResult:
    """Validate a table as read; `today` bounds diagnosis dates, `day_first` reads dd/mm/yyyy."""
    info = Tm2FileInfo(raw.encoding, raw.delimiter, raw.ignored_columns, raw.header_fields)
    collector = _Collector(info)
    collector.add(raw, today=today, day_first=day_first)
    return collector.result()


@dataclass
class _ChunkOutcome:
    rows: int
    records: pd.DataFrame  # first of each key within the chunk, index 0..n-1
    filled: pd.Series  # over `records`: condition_name was filled with the WHO title
    duplicate_rows: list[dict[str, int]]
    rejected_rows: list[dict[str, Any]]


AcceptedSink = Callable[[pd.DataFrame], None]
"""Takes each chunk's accepted records (ACCEPTED_RECORD_COLUMNS, in row order) as they are made."""
RejectSink = Callable[[list[dict[str, Any]]], None]
"""Takes each chunk's rejected rows ({row, values, reasons}, in row order) as they are found."""


class _Collector:
    """Adds up chunk outcomes; a key first seen in an earlier chunk wins over later rows."""

    def __init__(
        self, info: Tm2FileInfo, sink: AcceptedSink | None = None, reject_sink: RejectSink | None = None
    ) -> None:
        self.info = info
        self.sink = sink
        self.reject_sink = reject_sink
        self.rows = 0
        self.records: list[pd.DataFrame] = []  # gathered only when there is no sink
        self.rejected_rows: list[dict[str, Any]] = []  # gathered only when there is no reject sink
        self.rejected = 0
        self.rejection_reasons: Counter[tuple[str, str]] = Counter()
        self.rejected_codes: Counter[str] = Counter()
        self.first_rejected_rows: list[int] = []
        self.duplicate_rows = DuplicateRows()
        self.warnings = RowWarnings()
        # Every accepted key and its source row (compact: ~48 bytes a key; it grows with the file).
        self.accepted_keys = KeyIndex()
        self.per_system: Counter[str] = Counter()
        self.per_block: Counter[str] = Counter()
        self.messages: dict[tuple[str, str, str, object], str] = {}

    def add(self, raw: RawTable, *, today: datetime.date, day_first: bool) -> None:
        chunk = _validate_chunk(raw, today=today, day_first=day_first, messages=self.messages)
        records, filled, duplicates = chunk.records, chunk.filled, chunk.duplicate_rows
        keys = records["record_key"].tolist()
        rows = records["source_row"].tolist()
        digests = key_digests(keys)
        if len(self.accepted_keys):
            first_rows = self.accepted_keys.first_rows(digests)
            seen = first_rows >= 0
            if seen.any():
                # Rows of this chunk that repeat an earlier chunk's key, and the rows that repeat them.
                earlier = {
                    row: int(first)
                    for row, first, repeated in zip(rows, first_rows, seen, strict=True)
                    if repeated
                }
                duplicates = [
                    {
                        "row": d["row"],
                        "duplicate_of_row": earlier.get(d["duplicate_of_row"], d["duplicate_of_row"]),
                    }
                    for d in duplicates
                ]
                duplicates += [{"row": row, "duplicate_of_row": first} for row, first in earlier.items()]
                duplicates.sort(key=lambda duplicate: duplicate["row"])
                records = records.loc[~seen].reset_index(drop=True)
                filled = filled.loc[~seen].reset_index(drop=True)
                digests = digests[~seen]
                rows = records["source_row"].tolist()
        self.accepted_keys.add(digests, rows)
        self.rows += chunk.rows
        self.per_system.update(records["system_type"].value_counts().to_dict())
        self.per_block.update(records["who_block"].value_counts().to_dict())
        self._add_rejected(chunk.rejected_rows)
        self.duplicate_rows.add_chunk(duplicates)
        self.warnings.add_chunk(_warnings(records, filled))
        records = _in_record_columns(records)
        if self.sink is not None:
            self.sink(records)
        else:
            self.records.append(records)

    def _add_rejected(self, rejected_rows: list[dict[str, Any]]) -> None:
        self.rejected += len(rejected_rows)
        for rejected in rejected_rows:
            reasons = [(reason["column"], reason["check"]) for reason in rejected["reasons"]]
            self.rejection_reasons.update(reasons)
            if any(check in _CODE_CHECKS for _, check in reasons):
                code = clean_token(rejected["values"]["tm2_code"]).upper()
                self.rejected_codes[code if is_code_shaped(code) else f"({len(code)} characters)"] += 1
        wanted = ROW_LIST_LIMIT - len(self.first_rejected_rows)
        self.first_rejected_rows += [rejected["row"] for rejected in rejected_rows[:wanted]]
        if self.reject_sink is not None:
            self.reject_sink(rejected_rows)
        else:
            self.rejected_rows += rejected_rows

    def result(self) -> ValidationResult:
        records = None
        if self.sink is None:
            frames = [frame for frame in self.records if len(frame)] or self.records[:1]
            self.records = []  # the chunks' frames go as soon as the whole one is built
            records = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
            del frames
        return ValidationResult(
            rows=self.rows,
            accepted=len(self.accepted_keys),  # one entry per accepted record
            duplicates=len(self.duplicate_rows),
            rejected=self.rejected,
            accepted_records=records,
            rejected_rows=self.rejected_rows,
            duplicate_rows=self.duplicate_rows,
            warnings=self.warnings,
            encoding=self.info.encoding,
            delimiter=self.info.delimiter,
            ignored_columns=list(self.info.ignored_columns),
            accepted_per_system=dict(sorted(self.per_system.items())),
            accepted_per_block=dict(self.per_block.most_common()),
            rejection_reasons=dict(self.rejection_reasons.most_common()),
            rejected_codes=dict(self.rejected_codes.most_common()),
            first_rejected_rows=self.first_rejected_rows,
        )


def _in_record_columns(records: pd.DataFrame) -> pd.DataFrame:
    if tuple(records.columns) == ACCEPTED_RECORD_COLUMNS:
        return records
    return records.loc[:, list(ACCEPTED_RECORD_COLUMNS)]


def _present(cells: dict[str, Any]) -> dict[str, Any]:
    """A rejected row's cells; `extra_fields` only for a row that had fields past the header's width."""
    if EXTRA_FIELDS in cells and not isinstance(cells[EXTRA_FIELDS], list):
        del cells[EXTRA_FIELDS]
    return cells


def _validate_chunk(
    raw: RawTable,
    *,
    today: datetime.date,
    day_first: bool,
    messages: dict[tuple[str, str, str, object], str],
) -> _ChunkOutcome:
    frame = raw.frame
    ragged = frame["ragged"].to_numpy(dtype=bool)
    checked = frame.loc[~ragged] if ragged.any() else frame
    normalized = normalize_tm2_frame(checked, day_first=day_first)
    problems = row_problems(normalized, today=today)

    reasons_by_index: dict[int, list[dict[str, str]]] = {
        int(index): [
            {
                "column": "*",
                "check": "ragged_row",
                "message": f"row has {count} fields, the header has {raw.header_fields}",
            }
        ]
        for index, count in zip(frame.index[ragged], frame["field_count"].to_numpy()[ragged], strict=True)
    }
    raw_cells = {column: frame[column].to_numpy() for column in TM2_COLUMNS}
    canonical_cells = {column: normalized[column].to_numpy() for column in TM2_COLUMNS}
    for index, raw_position, position, column, check in zip(
        problems["index"],
        frame.index.get_indexer(problems["index"]),
        normalized.index.get_indexer(problems["index"]),
        problems["column"],
        problems["check"],
        strict=True,
    ):
        key = (column, check, raw_cells[column][raw_position], canonical_cells[column][position])
        if key not in messages:
            messages[key] = explain(*key, today=today, day_first=day_first)
        reasons_by_index.setdefault(int(index), []).append(
            {"column": column, "check": check, "message": messages[key]}
        )

    valid = normalized.loc[~normalized.index.isin(problems["index"])] if len(problems) else normalized
    valid = valid.assign(source_row=checked.loc[valid.index, "row"])
    records, duplicate_rows, filled = build_accepted_records(valid)

    kept = ["row", *TM2_COLUMNS, *([EXTRA_FIELDS] if EXTRA_FIELDS in frame else [])]
    rejected = frame.loc[list(reasons_by_index), kept].sort_values("row", kind="stable")
    rejected_rows = [
        {"row": int(cells.pop("row")), "values": _present(cells), "reasons": reasons_by_index[int(index)]}
        for index, cells in zip(rejected.index, rejected.to_dict("records"), strict=True)
    ]
    return _ChunkOutcome(
        rows=raw.rows,
        records=records,
        filled=filled,
        duplicate_rows=duplicate_rows,
        rejected_rows=rejected_rows,
    )


def _warnings(records: pd.DataFrame, filled: pd.Series) -> list[tuple[tuple[str, str], list[int], list[str]]]:
    """A chunk's warnings, per (column, check): the rows and their messages (one built per code or pair)."""
    filled_rows = records.loc[filled, ["source_row", "tm2_code"]]
    mismatched = records.loc[namaste_mismatches(records), ["source_row", "namaste_code", "tm2_code"]]
    pairs = list(zip(mismatched["namaste_code"], mismatched["tm2_code"], strict=True))
    pair_messages = {pair: namaste_mismatch_message(*pair) for pair in set(pairs)}
    return [
        (
            ("condition_name", "missing"),
            filled_rows["source_row"].tolist(),
            [_filled_message(code) for code in filled_rows["tm2_code"]],
        ),
        (
            ("namaste_code", "namaste_mismatch"),
            mismatched["source_row"].tolist(),
            [pair_messages[pair] for pair in pairs],
        ),
    ]


@functools.cache
def _filled_message(code: str) -> str:
    return f"condition_name was empty; filled with the WHO title of {code}"
