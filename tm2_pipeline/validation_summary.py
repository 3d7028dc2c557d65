"""What one file's validation came to, in a form that travels with the accepted table.

The summary rides in the Parquet file's footer (`accepted_table.py`), so an unchanged file
re-ingested on the same day with the same rules reuses its validated table instead of validating
again (`reusable`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from tm2_pipeline import codes
from tm2_pipeline.accepted_table import AcceptedTable
from tm2_pipeline.quality_report import quality_report_markdown
from tm2_pipeline.validation import ROW_LIST_LIMIT, ValidationResult

# Every module whose code decides what validation returns.
_RULE_SOURCES = (
    "file_text.py",
    "reading.py",
    "csv_blocks.py",
    "normalize.py",
    "schema.py",
    "records.py",
    "identity.py",
    "validation.py",
    "key_index.py",
    "duplicate_rows.py",
    "row_warnings.py",
    "codes.py",  # code shapes, TM1 detection and suggestions, beside the code list itself
)


@cache
def rules_fingerprint() -> str:
    """Changes whenever the validation code or the reference data change."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in [package / name for name in _RULE_SOURCES] + [codes.TM2_LIST_PATH, codes.CROSSWALK_PATH]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ValidationSummary:
    file: str
    sha256: str
    rows: int
    accepted: int
    duplicates: int
    rejected: int
    encoding: str
    delimiter: str
    ignored_columns: list[str]
    duplicate_rows: list[int]
    rejected_rows: list[int]
    quality_report: str
    validated_on: str  # "today" decides future dates and two-digit years
    day_first: bool
    rules: str

    @property
    def counts(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
        }

    @property
    def reject_rate(self) -> float:
        return self.rejected / self.rows if self.rows else 0.0

    def table_attrs(self) -> dict[str, Any]:
        """What the validated table carries in its footer (see accepted_table.py)."""
        return {"file": self.file, "sha256": self.sha256, "validation": asdict(self)}


def summarize(
    result: ValidationResult, *, file: str, sha256: str, today: date, day_first: bool
) -> ValidationSummary:
    return ValidationSummary(
        file=file,
        sha256=sha256,
        rows=result.rows,
        accepted=result.accepted,
        duplicates=result.duplicates,
        rejected=result.rejected,
        encoding=result.encoding,
        delimiter=result.delimiter,
        ignored_columns=list(result.ignored_columns),
        duplicate_rows=result.duplicate_rows.first(ROW_LIST_LIMIT),
        rejected_rows=result.first_rejected_rows,
        quality_report=quality_report_markdown(result, file),
        validated_on=today.isoformat(),
        day_first=day_first,
        rules=rules_fingerprint(),
    )


def table_identity(attrs: dict[str, Any]) -> str | None:
    """Which validation a validated table holds: the bytes, the day, the date order and the rules.
    The same bytes validated another day (future dates), or under other rules, can accept other rows."""
    validation = attrs.get("validation") or {}
    if not validation:
        return None
    return _identity(*(validation.get(name) for name in ("sha256", "validated_on", "day_first", "rules")))


def _identity(sha256: str, validated_on: str, day_first: bool, rules: str) -> str:
    return json.dumps([sha256, validated_on, day_first, rules])


def reusable(
    table_path: Path, *, sha256: str, today: date, day_first: bool
) -> tuple[AcceptedTable, ValidationSummary] | None:
    """The earlier validated table of these very bytes, if the same rules ran on it today."""
    if not table_path.exists():
        return None
    table = AcceptedTable(table_path)  # the footer is read, not the table
    wanted = _identity(sha256, today.isoformat(), day_first, rules_fingerprint())
    if table_identity(table.attrs) != wanted:
        return None
    return table, ValidationSummary(**table.attrs["validation"])
