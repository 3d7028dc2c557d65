"""The rules a normalized TM2 row must satisfy, as a pandera DataFrameModel; failures -> per-row checks.

Design: `normalize.py` turns raw text into canonical values without judging them; this model holds
every rule, one named check per rule, named after the reason vocabulary (`unknown_code`,
`future_date`, ...), so `SchemaErrors.failure_cases` (column, check, index) maps straight to
reasons and `normalize.explain` writes the messages. Checks are vectorized over whole columns.
Columns are typed `object`: pandera's `str` dtype check tests every element in Python (about 0.3 s
per column per million rows) and the normalizers only ever produce str, or None where allowed.

When a value fails several rules of one column (SA00 is a TM1 code *and* not in the TM2 list; an
empty date is `missing`), the first in `COLUMN_CHECKS` order is kept: one reason per column.
`control_chars` means "not printable" (`str.isprintable`): Unicode control, format (bidi marks),
private-use and unassigned characters; the normalizers have already turned spaces into " ".
The model depends on `today` (future dates), so `tm2_rows_model(today)` builds one per day.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors
from pandera.typing import Series

from tm2_pipeline.codes import TM1_CODE_SHAPE, tm2_code_list
from tm2_pipeline.normalize import (
    MAX_CONDITION_NAME_LENGTH,
    MAX_IDENTIFIER_LENGTH,
    OLDEST_DATE,
    SEVERITIES,
    SYSTEM_TYPES,
    factorize,
)

# The checks each column can fail, most specific first.
COLUMN_CHECKS: dict[str, tuple[str, ...]] = {
    "patient_id": ("missing", "control_chars", "excel_mangled_id", "too_long"),
    "tm2_code": ("missing", "tm1_code", "unknown_code"),
    "condition_name": ("too_long",),
    "system_type": ("missing", "bad_system"),
    "severity": ("bad_severity",),
    "diagnosis_date": ("missing", "bad_date", "future_date", "too_old"),
    "practitioner_id": ("missing", "control_chars", "excel_mangled_id", "too_long"),
    "namaste_code": ("too_long",),
}
# A number Excel displayed in scientific notation (9.11235E+13): the digits beyond are gone.
EXCEL_SCIENTIFIC = re.compile(r"[0-9](?:[.,][0-9]+)?E[+-]?[0-9]{1,3}", re.IGNORECASE)
_SCIENTIFIC_LINE = re.compile(rf"^{EXCEL_SCIENTIFIC.pattern}$", re.IGNORECASE | re.MULTILINE)


class SchemaBug(RuntimeError):
    """The normalized frame broke a structural rule (dtype, nulls, columns): a bug, not bad input."""


# Checks see nulls themselves: pandera's ignore_na costs a null scan of the column per check.
_ALL = {"ignore_na": False}


def _each(values: pd.Series, function: Callable[[Any], Any], dtype: type = bool) -> pd.Series:
    """`function` on every value, as a Series (a C-level map: faster than the `.str` accessor)."""
    return pd.Series(np.fromiter(map(function, values), dtype=dtype, count=len(values)), index=values.index)


def _each_unique(values: pd.Series, predicate: Callable[[str], bool]) -> pd.Series:
    """`predicate` once per distinct value: for columns whose values repeat (codes)."""
    positions, uniques = factorize(values)
    verdicts = np.fromiter(map(predicate, uniques), dtype=bool, count=len(uniques))
    return pd.Series(verdicts[positions], index=values.index)


def _looks_scientific(value: str) -> bool:
    return value[:1].isdigit() and EXCEL_SCIENTIFIC.fullmatch(value) is not None


def _joined(values: pd.Series) -> str | None:
    """The column's values as one string (None when one is not a str): one C-level pass."""
    try:
        return "".join(values.to_numpy())
    except TypeError:
        return None


def _printable(values: pd.Series) -> pd.Series:
    joined = _joined(values)
    if joined is not None and joined.isprintable():
        return pd.Series(True, index=values.index)  # the usual case, decided in one pass
    return _each(values, str.isprintable)


def _scientific(values: pd.Series) -> pd.Series:
    joined = _joined(values)
    if joined is None or "\n" in joined:
        return _each(values, _looks_scientific)
    verdicts = np.zeros(len(values), dtype=bool)
    if "e" in joined or "E" in joined:
        # One regex pass over the values as lines; a match starts a value that matches whole.
        lines = "\n".join(values.to_numpy())
        starts = [match.start() for match in _SCIENTIFIC_LINE.finditer(lines)]
        if starts:
            ends = np.cumsum(np.fromiter(map(len, values.to_numpy()), dtype=np.int64, count=len(values)) + 1)
            verdicts[np.searchsorted(ends, starts, side="right")] = True  # value i spans [ends[i-1], ends[i])
    return pd.Series(verdicts, index=values.index)


@cache
def tm2_rows_model(today: datetime.date) -> type[pa.DataFrameModel]:
    """The DataFrameModel of normalized TM2 rows, with `today` as the latest allowed diagnosis date."""
    today_iso = today.isoformat()
    oldest_iso = OLDEST_DATE.isoformat()
    tm2_codes = sorted(tm2_code_list().codes)

    class NormalizedTm2Rows(pa.DataFrameModel):
        patient_id: Series[object] = pa.Field(nullable=False)
        tm2_code: Series[object] = pa.Field(nullable=False)
        condition_name: Series[object] = pa.Field(nullable=False)
        system_type: Series[object] = pa.Field(nullable=False)
        severity: Series[object] = pa.Field(nullable=True)
        diagnosis_date: Series[object] = pa.Field(nullable=True)  # None: unreadable, see bad_date
        practitioner_id: Series[object] = pa.Field(nullable=False)
        namaste_code: Series[object] = pa.Field(nullable=True)

        class Config:
            strict = True

        @pa.check(
            "patient_id",
            "tm2_code",
            "system_type",
            "diagnosis_date",
            "practitioner_id",
            name="missing",
            **_ALL,
        )
        def cell_not_empty(cls, values: Series[object]) -> Series[bool]:
            return values.ne("")

        @pa.check("patient_id", "practitioner_id", name="control_chars", **_ALL)
        def printable(cls, values: Series[object]) -> Series[bool]:
            return _printable(values)

        @pa.check("patient_id", "practitioner_id", name="excel_mangled_id", **_ALL)
        def not_scientific_notation(cls, values: Series[object]) -> Series[bool]:
            return ~_scientific(values)

        @pa.check("patient_id", "practitioner_id", name="too_long", **_ALL)
        def identifier_length(cls, values: Series[object]) -> Series[bool]:
            return _each(values, len, dtype=np.int64).le(MAX_IDENTIFIER_LENGTH)

        @pa.check("namaste_code", name="too_long", **_ALL)
        def namaste_length(cls, values: Series[object]) -> Series[bool]:
            # The code goes into the condition's note in OpenMRS; None when the row has none.
            return _each(values, lambda code: code is None or len(code) <= MAX_IDENTIFIER_LENGTH)

        @pa.check("condition_name", name="too_long", **_ALL)
        def name_length(cls, values: Series[object]) -> Series[bool]:
            return _each(values, len, dtype=np.int64).le(MAX_CONDITION_NAME_LENGTH)

        @pa.check("tm2_code", name="tm1_code", **_ALL)
        def not_tm1(cls, values: Series[object]) -> Series[bool]:
            return ~_each_unique(values, lambda code: bool(TM1_CODE_SHAPE.match(code)))

        @pa.check("tm2_code", name="unknown_code", **_ALL)
        def in_tm2_list(cls, values: Series[object]) -> Series[bool]:
            return values.isin(tm2_codes)

        @pa.check("system_type", name="bad_system", **_ALL)
        def known_system(cls, values: Series[object]) -> Series[bool]:
            return values.isin(SYSTEM_TYPES)

        @pa.check("severity", name="bad_severity", **_ALL)
        def known_severity(cls, values: Series[object]) -> Series[bool]:
            return values.isna() | values.isin(SEVERITIES)

        @pa.check("diagnosis_date", name="bad_date", **_ALL)
        def readable_date(cls, values: Series[object]) -> Series[bool]:
            return values.notna()

        @pa.check("diagnosis_date", name="future_date", **_ALL)
        def not_after_today(cls, values: Series[object]) -> Series[bool]:
            return values.isna() | values.le(today_iso)  # "" (missing) sorts first and passes

        @pa.check("diagnosis_date", name="too_old", **_ALL)
        def not_before_1900(cls, values: Series[object]) -> Series[bool]:
            return values.isna() | values.eq("") | values.ge(oldest_iso)

    return NormalizedTm2Rows


def row_problems(normalized: pd.DataFrame, *, today: datetime.date) -> pd.DataFrame:
    """One row per (frame index label, column) that breaks a rule: columns `index`, `column`, `check`.

    Sorted by index, then column order; the most specific check per column (`COLUMN_CHECKS`).
    """
    empty = pd.DataFrame({"index": pd.Series(dtype="int64"), "column": [], "check": []})
    try:
        tm2_rows_model(today).validate(normalized, lazy=True, inplace=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        return empty
    finally:
        # pandera caches its accessor on the frame, and the accessor points back at the frame: that
        # cycle would keep each chunk's columns alive until a full garbage collection, chunks later.
        vars(normalized).pop("pandera", None)
    known = [
        check in COLUMN_CHECKS.get(column, ()) and index == index  # index is NaN for structural failures
        for column, check, index in zip(cases["column"], cases["check"], cases["index"], strict=True)
    ]
    unexpected = cases.loc[[not ok for ok in known], ["column", "check"]].drop_duplicates()
    if len(unexpected):
        # Column and check names only: failure_case values may be PHI.
        raise SchemaBug(f"normalized TM2 frame broke structural rules: {unexpected.to_dict('records')}")
    column_order = {column: i for i, column in enumerate(COLUMN_CHECKS)}
    problems = pd.DataFrame(
        {
            "index": cases["index"].astype("int64"),
            "column": cases["column"],
            "check": cases["check"],
            "column_rank": cases["column"].map(column_order),
            "check_rank": [
                COLUMN_CHECKS[c].index(k) for c, k in zip(cases["column"], cases["check"], strict=True)
            ],
        }
    )
    problems = problems.sort_values(["index", "column_rank", "check_rank"], kind="stable")
    problems = problems.drop_duplicates(["index", "column"], keep="first")
    return problems[["index", "column", "check"]].reset_index(drop=True)
