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
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tm2_pipeline.normalize import explain, namaste_mismatch_message, namaste_mismatches, normalize_tm2_frame
from tm2_pipeline.reading import TM2_COLUMNS, RawTable, read_tm2_bytes
from tm2_pipeline.records import ACCEPTED_RECORD_COLUMNS, build_accepted_records
from tm2_pipeline.schema import row_problems


@dataclass
class ValidationResult:
    """The outcome of validating one file; `accepted_records` has exactly `ACCEPTED_RECORD_COLUMNS`."""

    rows: int
    accepted: int
    duplicates: int
    rejected: int
    accepted_records: pd.DataFrame
    rejected_rows: list[dict[str, Any]] = field(default_factory=list)
    duplicate_rows: list[dict[str, int]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    encoding: str = "utf-8"
    delimiter: str = ","
    ignored_columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.rows != self.accepted + self.duplicates + self.rejected:
            raise AssertionError(
                f"validation accounting broken: {self.rows} rows != {self.accepted} accepted + "
                f"{self.duplicates} duplicates + {self.rejected} rejected"
            )


def validate_tm2_bytes(data: bytes, *, today: datetime.date, day_first: bool = True) -> ValidationResult:
    """Read and validate a clinic export; raises `reading.FileRefused` for an unreadable file."""
    return validate_tm2_table(read_tm2_bytes(data), today=today, day_first=day_first)


def validate_tm2_table(raw: RawTable, *, today: datetime.date, day_first: bool = True) -> ValidationResult:
    """Validate a table as read; `today` bounds diagnosis dates, `day_first` reads dd/mm/yyyy."""
    frame = raw.frame
    ragged = frame["ragged"].to_numpy(dtype=bool)
    checked = frame.loc[~ragged] if ragged.any() else frame
    normalized = normalize_tm2_frame(checked, today=today, day_first=day_first)
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
    messages: dict[tuple[str, str, str, object], str] = {}
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

    rejected = frame.loc[list(reasons_by_index), ["row", *TM2_COLUMNS]].sort_values("row", kind="stable")
    rejected_rows = [
        {"row": int(cells.pop("row")), "values": cells, "reasons": reasons_by_index[int(index)]}
        for index, cells in zip(rejected.index, rejected.to_dict("records"), strict=True)
    ]
    return ValidationResult(
        rows=raw.rows,
        accepted=len(records),
        duplicates=len(duplicate_rows),
        rejected=len(rejected_rows),
        accepted_records=records.loc[:, list(ACCEPTED_RECORD_COLUMNS)],
        rejected_rows=rejected_rows,
        duplicate_rows=duplicate_rows,
        warnings=_warnings(records, filled),
        encoding=raw.encoding,
        delimiter=raw.delimiter,
        ignored_columns=list(raw.ignored_columns),
    )


def _warnings(records: pd.DataFrame, filled: pd.Series) -> list[dict[str, Any]]:
    warnings: list[dict[str, Any]] = []
    for row, code in zip(records.loc[filled, "source_row"], records.loc[filled, "tm2_code"], strict=True):
        warnings.append(
            {
                "row": int(row),
                "column": "condition_name",
                "check": "missing",
                "message": f"condition_name was empty; filled with the WHO title of {code}",
            }
        )
    mismatched = records.loc[namaste_mismatches(records)]
    for row, namaste, code in zip(
        mismatched["source_row"], mismatched["namaste_code"], mismatched["tm2_code"], strict=True
    ):
        warnings.append(
            {
                "row": int(row),
                "column": "namaste_code",
                "check": "namaste_mismatch",
                "message": namaste_mismatch_message(namaste, code),
            }
        )
    return sorted(warnings, key=lambda warning: warning["row"])
