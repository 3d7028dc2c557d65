"""Records other versions of a file name stored that this version no longer has."""

import pyarrow as pa

from tm2_pipeline import other_versions
from tm2_pipeline.other_versions import left_behind


def test_only_keys_missing_from_this_version_count_and_a_few_rows_are_named(monkeypatch):
    monkeypatch.setattr(other_versions, "_BATCH", 3)  # several batches
    stored = [(f"k{n}", "ab" * 32, n + 1) for n in range(10)]
    current = pa.chunked_array([["k0", "k2"], ["k4", "k6", "k8", "new"]])
    found = left_behind(iter(stored), current)
    assert found.count == 5
    assert found.examples == [f"{'ab' * 6} row {n}" for n in (2, 4, 6, 8, 10)]


def test_nothing_stored_from_other_versions_leaves_nothing_behind():
    found = left_behind([], pa.array(["k0"]))
    assert (found.count, found.examples) == (0, [])


def test_at_most_twenty_rows_are_named():
    stored = [(f"k{n}", "cd" * 32, n) for n in range(100)]
    found = left_behind(stored, pa.array([], pa.string()))
    assert found.count == 100 and len(found.examples) == other_versions.SHOWN
