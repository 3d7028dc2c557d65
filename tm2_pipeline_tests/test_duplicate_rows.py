"""duplicate_rows.py: duplicates kept compact, in row order."""

from __future__ import annotations

import pytest

from tm2_pipeline.duplicate_rows import DuplicateRows


def test_duplicates_come_back_as_added_and_the_first_rows_are_listed() -> None:
    duplicates = DuplicateRows()
    duplicates.add_chunk([{"row": 3, "duplicate_of_row": 1}, {"row": 5, "duplicate_of_row": 1}])
    duplicates.add_chunk([])
    duplicates.add_chunk([{"row": 9, "duplicate_of_row": 2}])
    assert list(duplicates) == [
        {"row": 3, "duplicate_of_row": 1},
        {"row": 5, "duplicate_of_row": 1},
        {"row": 9, "duplicate_of_row": 2},
    ]
    assert len(duplicates) == 3
    assert (duplicates.first(2), duplicates.first(10), duplicates.first(0)) == ([3, 5], [3, 5, 9], [])


@pytest.mark.parametrize(
    "later",
    [
        [{"row": 4, "duplicate_of_row": 1}],
        [{"row": 8, "duplicate_of_row": 1}, {"row": 8, "duplicate_of_row": 2}],
    ],
)
def test_rows_out_of_order_or_twice_are_refused(later: list[dict[str, int]]) -> None:
    duplicates = DuplicateRows()
    duplicates.add_chunk([{"row": 5, "duplicate_of_row": 1}])
    with pytest.raises(ValueError, match="row order"):
        duplicates.add_chunk(later)
    assert list(duplicates) == [{"row": 5, "duplicate_of_row": 1}]
