"""KeyIndex: which keys a file accepted already, and at which row, against a plain dict."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tm2_pipeline import key_index
from tm2_pipeline.key_index import KeyIndex, key_digests


def key(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


@given(st.lists(st.lists(st.integers(0, 400), max_size=60), max_size=12), st.lists(st.integers(0, 400)))
def test_answers_like_a_dict_whatever_the_chunking(chunks: list[list[int]], asked: list[int]) -> None:
    index, reference, row = KeyIndex(), {}, 0
    for chunk in chunks:
        new = [n for n in dict.fromkeys(chunk) if key(n) not in reference]  # distinct, not yet in
        rows = list(range(row, row + len(new)))
        row += len(new)
        index.add(key_digests([key(n) for n in new]), rows)
        reference.update((key(n), r) for n, r in zip(new, rows, strict=True))
    assert len(index) == len(reference)
    assert index.first_rows(key_digests([key(n) for n in asked])).tolist() == [
        reference.get(key(n), -1) for n in asked
    ]


def test_many_chunks_stay_few_segments_and_every_key_is_found() -> None:
    index = KeyIndex()
    keys = [key(n) for n in range(20_000)]
    random.Random(7).shuffle(keys)
    for start in range(0, len(keys), 1000):
        index.add(key_digests(keys[start : start + 1000]), list(range(start, start + 1000)))
    assert len(index._segments) <= 5  # merged as they grow: log2(20) + 1
    assert index.first_rows(key_digests(keys)).tolist() == list(range(20_000))
    assert index.first_rows(key_digests([key(-1), key(20_000)])).tolist() == [-1, -1]


def test_segments_stop_merging_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(key_index, "MERGE_LIMIT", 4000)
    index = KeyIndex()
    keys = [key(n) for n in range(20_000)]
    for start in range(0, len(keys), 1000):
        index.add(key_digests(keys[start : start + 1000]), list(range(start, start + 1000)))
    sizes = [len(segment.digests) for segment in index._segments]
    assert sizes == [4000] * 5  # no merge past 4000 keys, and every merge up to it
    assert index.first_rows(key_digests(keys[::-1])).tolist() == list(range(20_000))[::-1]


def test_digests_ending_in_zero_bytes_are_told_apart() -> None:
    # numpy strips trailing NUL bytes from S32 values: keys ending in 00 must still match exactly.
    ends_in_zeros, ends_in_one_zero = "ab" * 30 + "0000", "ab" * 31 + "00"
    index = KeyIndex()
    index.add(key_digests([ends_in_zeros, ends_in_one_zero]), [5, 6])
    asked = [ends_in_zeros, ends_in_one_zero, "ab" * 30 + "00ff", "ab" * 32]
    assert index.first_rows(key_digests(asked)).tolist() == [5, 6, -1, -1]


@pytest.mark.parametrize("keys", [["zz" * 32], ["ab" * 16], ["ab" * 31 + "a", "ab" * 32 + "a"], [None]])
def test_keys_that_are_not_sha256_hex_are_refused(keys: list) -> None:
    with pytest.raises(ValueError):
        key_digests(keys)


def test_keys_sharing_their_first_eight_bytes_are_still_told_apart() -> None:
    # The search runs on the first 8 bytes; digests that share them fall back to the whole digest.
    shared = ["00" * 8 + f"{n:02x}" * 24 for n in (1, 2, 3, 4, 5)]
    index = KeyIndex()
    index.add(key_digests(shared[:3]), [10, 11, 12])
    index.add(key_digests(shared[3:4]), [13])
    asked = [*reversed(shared), "00" * 8 + "ff" * 24]
    assert index.first_rows(key_digests(asked)).tolist() == [-1, 13, 12, 11, 10, -1]
