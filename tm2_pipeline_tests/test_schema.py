"""schema.py: every pandera rule fires under its vocabulary name; one reason per column; bugs raise."""

from __future__ import annotations

import datetime
import gc
import weakref

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tm2_pipeline.normalize import CHECKS
from tm2_pipeline.schema import (
    COLUMN_CHECKS,
    SchemaBug,
    _looks_scientific,
    _printable,
    _scientific,
    row_problems,
    tm2_rows_model,
)

TODAY = datetime.date(2026, 6, 1)
GOOD = {
    "patient_id": "MRN-1",
    "tm2_code": "SK00",
    "condition_name": "Headache",
    "system_type": "Ayurveda",
    "severity": "Mild",
    "diagnosis_date": "2024-01-15",
    "practitioner_id": "HPR-1",
    "namaste_code": None,
}


def frame_of(*changes: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame([{**GOOD, **change} for change in changes], dtype=object)


def problems_of(change: dict[str, object]) -> list[tuple[str, str]]:
    found = row_problems(frame_of(change), today=TODAY)
    return list(zip(found["column"], found["check"], strict=True))


def test_a_good_row_has_no_problem() -> None:
    found = row_problems(
        frame_of({}, {"severity": None, "condition_name": "", "namaste_code": "AAA-1"}), today=TODAY
    )
    assert found.empty
    assert list(found.columns) == ["index", "column", "check"]


def test_every_rule_name_is_in_the_vocabulary() -> None:
    for checks in COLUMN_CHECKS.values():
        assert set(checks) <= set(CHECKS)
    schema = tm2_rows_model(TODAY).to_schema()
    for column, checks in COLUMN_CHECKS.items():
        assert {check.name for check in schema.columns[column].checks} == set(checks)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"patient_id": ""}, [("patient_id", "missing")]),
        ({"patient_id": "MRN\x07-1"}, [("patient_id", "control_chars")]),
        ({"patient_id": "MRN-1\u200f"}, [("patient_id", "control_chars")]),  # right-to-left mark (Cf)
        ({"patient_id": "9.11235E+13"}, [("patient_id", "excel_mangled_id")]),
        ({"patient_id": "9,11235E+13"}, [("patient_id", "excel_mangled_id")]),
        ({"patient_id": "P" * 65}, [("patient_id", "too_long")]),
        ({"patient_id": "P" * 64}, []),
        ({"tm2_code": ""}, [("tm2_code", "missing")]),
        ({"tm2_code": "SA00"}, [("tm2_code", "tm1_code")]),  # also not in the list: the specific one wins
        ({"tm2_code": "SJ3Z"}, [("tm2_code", "tm1_code")]),
        ({"tm2_code": "SR5Z€"}, [("tm2_code", "unknown_code")]),
        ({"tm2_code": "SK40"}, [("tm2_code", "unknown_code")]),  # TM2-shaped, unused slot
        ({"tm2_code": "sk00"}, [("tm2_code", "unknown_code")]),  # rules see canonical values only
        ({"system_type": ""}, [("system_type", "missing")]),
        ({"system_type": "Homeopathy"}, [("system_type", "bad_system")]),
        ({"severity": "very bad"}, [("severity", "bad_severity")]),
        ({"diagnosis_date": ""}, [("diagnosis_date", "missing")]),
        ({"diagnosis_date": None}, [("diagnosis_date", "bad_date")]),
        ({"diagnosis_date": "2026-06-02"}, [("diagnosis_date", "future_date")]),
        ({"diagnosis_date": "2026-06-01"}, []),  # today is allowed
        ({"diagnosis_date": "1899-12-31"}, [("diagnosis_date", "too_old")]),
        ({"diagnosis_date": "1900-01-01"}, []),
        ({"practitioner_id": ""}, [("practitioner_id", "missing")]),
        ({"practitioner_id": "H" * 65}, [("practitioner_id", "too_long")]),
        ({"practitioner_id": "7.12E+13"}, [("practitioner_id", "excel_mangled_id")]),
        ({"condition_name": "x" * 4097}, [("condition_name", "too_long")]),
        ({"condition_name": "x" * 4096}, []),
        ({"namaste_code": "N" * 65}, [("namaste_code", "too_long")]),
        ({"namaste_code": None}, []),
    ],
)
def test_each_rule(change: dict[str, object], expected: list[tuple[str, str]]) -> None:
    assert problems_of(change) == expected


def test_one_reason_per_column_in_column_order_and_index_labels_kept() -> None:
    frame = frame_of({}, {"diagnosis_date": "", "tm2_code": "SA00", "patient_id": "", "system_type": "x"})
    frame.index = [7, 9]
    found = row_problems(frame, today=TODAY)
    assert found.to_dict("records") == [
        {"index": 9, "column": "patient_id", "check": "missing"},
        {"index": 9, "column": "tm2_code", "check": "tm1_code"},
        {"index": 9, "column": "system_type", "check": "bad_system"},
        {"index": 9, "column": "diagnosis_date", "check": "missing"},
    ]


def test_the_model_is_built_per_day() -> None:
    assert tm2_rows_model(TODAY) is tm2_rows_model(TODAY)
    late = frame_of({"diagnosis_date": "2026-06-02"})
    assert row_problems(late, today=TODAY + datetime.timedelta(days=1)).empty


def test_structural_breakage_is_a_bug_without_values_in_the_message() -> None:
    with pytest.raises(SchemaBug) as caught:
        row_problems(frame_of({"patient_id": None}), today=TODAY)
    assert "not_nullable" in str(caught.value)
    with pytest.raises(SchemaBug):
        row_problems(frame_of({}).assign(extra="MRN-SECRET"), today=TODAY)


_ID_TEXT = st.text(alphabet="0123456789eE+-.,\n xMRN\x07\u200f", max_size=12)


@given(
    st.lists(st.one_of(_ID_TEXT, st.from_regex(r"[0-9]([.,][0-9]{1,4})?[eE][+-]?[0-9]{1,4}", fullmatch=True)))
)
def test_column_shortcuts_decide_like_the_value_by_value_rules(values: list[str]) -> None:
    column = pd.Series(values, dtype=object, index=range(5, 5 + len(values)))
    assert _scientific(column).tolist() == [_looks_scientific(value) for value in values]
    assert _printable(column).tolist() == [value.isprintable() for value in values]
    assert list(_scientific(column).index) == list(column.index)


@pytest.mark.parametrize("change", [{}, {"severity": "sometimes"}])
def test_a_checked_frame_is_freed_by_reference_counting_alone(change: dict[str, object]) -> None:
    # A frame left in a reference cycle lives until a full garbage collection: chunks of a large
    # file would pile up in memory (pandera's cached accessor made one).
    frame = frame_of(change)
    freed = weakref.ref(frame)
    gc.disable()
    try:
        row_problems(frame, today=TODAY)
        del frame
        assert freed() is None
    finally:
        gc.enable()
