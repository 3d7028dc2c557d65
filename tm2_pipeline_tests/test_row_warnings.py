"""row_warnings.py: compact warnings, in row order, counted per (column, check)."""

from __future__ import annotations

import pytest

from tm2_pipeline.row_warnings import RowWarnings

MISSING = ("condition_name", "missing")
MISMATCH = ("namaste_code", "namaste_mismatch")


def test_warnings_come_back_in_row_order_with_their_messages() -> None:
    warnings = RowWarnings()
    warnings.add_chunk(
        [(MISSING, [2, 9], ["filled SK00", "filled SK01"]), (MISMATCH, [2, 5], ["pair a", "pair b"])]
    )
    warnings.add_chunk([(MISSING, [], []), (MISMATCH, [11], ["pair a"])])
    assert list(warnings) == [
        {"row": 2, "column": "condition_name", "check": "missing", "message": "filled SK00"},
        {"row": 2, "column": "namaste_code", "check": "namaste_mismatch", "message": "pair a"},
        {"row": 5, "column": "namaste_code", "check": "namaste_mismatch", "message": "pair b"},
        {"row": 9, "column": "condition_name", "check": "missing", "message": "filled SK01"},
        {"row": 11, "column": "namaste_code", "check": "namaste_mismatch", "message": "pair a"},
    ]
    assert len(warnings) == 5
    assert warnings.counts() == {MISSING: 2, MISMATCH: 3}


def test_a_message_is_kept_once_however_many_rows_carry_it() -> None:
    warnings = RowWarnings()
    for start in range(0, 30_000, 10_000):
        rows = range(start, start + 10_000)
        warnings.add_chunk([(MISSING, list(rows), [f"filled SK0{row % 3}" for row in rows])])
    assert len(warnings) == 30_000
    assert len(warnings._messages) == 3
    assert [w["message"] for w in warnings][:4] == [
        "filled SK00",
        "filled SK01",
        "filled SK02",
        "filled SK00",
    ]


def test_nothing_added_is_nothing_counted() -> None:
    warnings = RowWarnings()
    warnings.add_chunk([(MISSING, [], []), (MISMATCH, [], [])])
    assert (len(warnings), list(warnings), warnings.counts()) == (0, [], {})


def test_chunks_out_of_row_order_or_rows_without_messages_are_refused() -> None:
    warnings = RowWarnings()
    warnings.add_chunk([(MISSING, [10], ["m"])])
    with pytest.raises(ValueError, match="row order"):
        warnings.add_chunk([(MISSING, [3], ["m"])])
    with pytest.raises(ValueError, match="message"):
        warnings.add_chunk([(MISSING, [12, 13], ["m"])])
    assert len(warnings) == 1
