"""The record keys a file has accepted so far, with their rows, in about 48 bytes a key.

Validation asks, chunk by chunk, which keys an earlier chunk already accepted and at which row: those
rows are duplicates. A dict of hex keys costs ~170 bytes a key, the largest thing that grows with the
file; here each key is its 32-byte sha256 digest in a sorted numpy segment, beside its row and the
digest's first 8 bytes as an integer (searching integers is 3x faster than 32-byte strings). Segments
are merged as they grow (a new one merges into the last while it is at least as large, up to
`MERGE_LIMIT` keys), so a lookup searches O(log n) of them, plus one per `MERGE_LIMIT` keys.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DIGEST = np.dtype("S32")  # fixed width: two different 32-byte digests never compare equal
_PREFIX = np.dtype(">u8")  # big-endian, so integer order is the digests' byte order
# Segments stop merging at this many keys: a merge briefly needs ~2x its segments' memory, and past
# this size that spike would grow with the file while lookups gain little (10M keys: ~10 segments).
MERGE_LIMIT = 1 << 20


def key_digests(keys: Sequence[str]) -> np.ndarray:
    """Hex sha256 keys as 32-byte digests (ValueError for anything else)."""
    if any(not isinstance(key, str) or len(key) != 2 * DIGEST.itemsize for key in keys):
        raise ValueError("record keys must be hex sha256 digests (64 hex characters)")
    try:
        return np.frombuffer(binascii.unhexlify("".join(keys)), dtype=DIGEST)
    except binascii.Error:
        raise ValueError("record keys must be hex sha256 digests (64 hex characters)") from None


def _prefixes(digests: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each digest as a native integer (a copy: no view keeps the bytes alive)."""
    words = np.frombuffer(np.ascontiguousarray(digests), dtype=_PREFIX)  # a view, 4 words a digest
    return words[:: DIGEST.itemsize // _PREFIX.itemsize].astype(np.uint64)


@dataclass(frozen=True)
class _Segment:
    digests: np.ndarray  # sorted
    prefixes: np.ndarray  # the digests' first 8 bytes, as integers (sorted with them)
    rows: np.ndarray

    @classmethod
    def sorted(cls, digests: np.ndarray, rows: np.ndarray) -> _Segment:
        order = np.argsort(digests, kind="stable")  # two sorted runs (a merge) sort in linear time
        ordered = digests[order]
        return cls(ordered, _prefixes(ordered), rows[order])

    def find(self, digests: np.ndarray, prefixes: np.ndarray, found: np.ndarray) -> None:
        """Write the row of every digest this segment holds into `found`."""
        last = len(self.digests) - 1
        at = np.minimum(np.searchsorted(self.prefixes, prefixes), last)
        same_prefix = self.prefixes[at] == prefixes
        hit = same_prefix & (self.digests[at] == digests)
        found[hit] = self.rows[at[hit]]
        # Two stored digests sharing 8 bytes (about never): search those few by the whole digest.
        unsure = np.flatnonzero(same_prefix & ~hit)
        if len(unsure):
            at = np.minimum(np.searchsorted(self.digests, digests[unsure]), last)
            exact = self.digests[at] == digests[unsure]
            found[unsure[exact]] = self.rows[at[exact]]


class KeyIndex:
    """Distinct record keys (as digests, see `key_digests`) and the row each was accepted at."""

    def __init__(self) -> None:
        self._segments: list[_Segment] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def first_rows(self, digests: np.ndarray) -> np.ndarray:
        """For each digest, the row its key was accepted at; -1 for a key not in the index."""
        found = np.full(len(digests), -1, dtype=np.int64)
        prefixes = _prefixes(digests)
        for segment in self._segments:
            segment.find(digests, prefixes, found)
        return found

    def add(self, digests: np.ndarray, rows: Sequence[int] | np.ndarray) -> None:
        """Digests not in the index yet (and distinct), with their rows."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(digests) != len(rows):
            raise ValueError("one row per key")
        if not len(digests):
            return
        self._segments.append(_Segment.sorted(digests, rows))
        self._size += len(digests)
        segments = self._segments
        while (
            len(segments) > 1
            and len(segments[-1].digests) >= len(segments[-2].digests)
            and len(segments[-1].digests) + len(segments[-2].digests) <= MERGE_LIMIT
        ):
            digests = np.concatenate([segments[-2].digests, segments[-1].digests])
            rows = np.concatenate([segments[-2].rows, segments[-1].rows])
            del segments[-2:]  # the halves go before the merged segment is sorted: a lower peak
            segments.append(_Segment.sorted(digests, rows))
            del digests, rows
