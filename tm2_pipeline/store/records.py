"""The stored TM2 diagnoses (`tm2_records`): additive bulk writes keyed by the record key.

One document per record key; a later file with new content for a key updates it, a record absent
from a later file stays. `diagnosis_date` is stored as the ISO `yyyy-mm-dd` string the key was made
from: a BSON date would add a time and a zone the clinic never said, the key's identity stays exact,
and ISO strings sort and range-query like dates in the (patient_id, diagnosis_date) index.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pandas as pd
from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database

from tm2_pipeline.gc_paused import gc_paused
from tm2_pipeline.identity import KEY_VERSION
from tm2_pipeline.records import ACCEPTED_RECORD_COLUMNS
from tm2_pipeline.store.errors import RecordFrameError, client_target, insert_new, translate_mongo_errors
from tm2_pipeline.store.indexes import META_COLLECTION, RECORDS_COLLECTION
from tm2_pipeline.store.lookups import chunked, lookup_chunk_size
from tm2_pipeline.store.store_turns import StoreTurnLost, StoreTurns
from tm2_pipeline.store.timestamps import stored_timestamp

SCHEMA_VERSION = 1

# The validation layer's accepted-record columns are the contract; stored as they come, after `_id`.
RECORD_COLUMNS = ACCEPTED_RECORD_COLUMNS
# One frame of accepted records, or several (a validated table read back in batches); a key may
# appear once only (checked within each frame; across frames the counts tell, see stored_once).
AcceptedFrames = pd.DataFrame | Iterable[pd.DataFrame]
CONTENT_FIELDS = RECORD_COLUMNS[1 : RECORD_COLUMNS.index("content_hash")]


@dataclass(frozen=True)
class StoreCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    # The store generation this file's content is current at; None when another writer changed
    # the collection meanwhile (then a re-run must compare again).
    generation: int | None = field(default=None, compare=False)

    def __add__(self, other: StoreCounts) -> StoreCounts:
        return StoreCounts(
            self.inserted + other.inserted, self.updated + other.updated, self.unchanged + other.unchanged
        )

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.unchanged


def _column_values(frame: pd.DataFrame, column: str) -> list[Any]:
    """A column as plain Python values (BSON cannot encode numpy scalars); missing values become None."""
    series = frame[column]
    if series.isna().any():
        series = series.astype(object).where(series.notna(), None)
    return series.tolist()


def _check_frame(accepted: pd.DataFrame) -> None:
    missing = [column for column in RECORD_COLUMNS if column not in accepted.columns]
    if missing:
        raise RecordFrameError(f"accepted records lack column(s): {', '.join(missing)}")
    if pd.api.types.is_datetime64_any_dtype(accepted["diagnosis_date"]):
        raise RecordFrameError("diagnosis_date must hold yyyy-mm-dd strings, not datetimes")
    keys = accepted["record_key"]
    if keys.isna().any():
        raise RecordFrameError("accepted records contain an empty record_key")
    if not keys.is_unique:
        # Duplicates are resolved upstream; two rows with one key would make the counts meaningless.
        raise RecordFrameError(f"accepted records repeat {int(keys.duplicated().sum())} record key(s)")


# Field order of a stored document (kept by `$set` on update, so every document reads alike).
DOCUMENT_FIELDS = (
    "_id", *CONTENT_FIELDS, "key_version", "content_hash", "source", "first_seen_at", "updated_at",
    "schema_version",
)  # fmt: skip


def record_document_batches(
    accepted: AcceptedFrames, *, file_name: str, sha256: str, now: datetime, batch_size: int
) -> Iterator[list[dict[str, Any]]]:
    """The `tm2_records` documents of accepted records, `batch_size` at a time, built column-wise
    (no per-row pandas access; one batch of documents in memory at a time)."""
    stamp = stored_timestamp(now)
    for frame in [accepted] if isinstance(accepted, pd.DataFrame) else accepted:
        _check_frame(frame)
        yield from _frame_batches(frame, file_name=file_name, sha256=sha256, stamp=stamp, size=batch_size)


def _frame_batches(
    accepted: pd.DataFrame, *, file_name: str, sha256: str, stamp: datetime, size: int
) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(accepted), size):
        part = accepted.iloc[start : start + size]
        key, *content, content_hash, rows = (_column_values(part, column) for column in RECORD_COLUMNS)
        count = len(rows)
        constant = [KEY_VERSION] * count, [stamp] * count, [SCHEMA_VERSION] * count
        with gc_paused():  # the documents hold no cycles (see gc_paused)
            sources = [{"file": file_name, "sha256": sha256, "row": row} for row in rows]
            columns = zip(
                key, *content, constant[0], content_hash, sources, constant[1], constant[1], constant[2],
                strict=True,
            )  # fmt: skip
            batch = [dict(zip(DOCUMENT_FIELDS, values, strict=True)) for values in columns]
        yield batch


def record_documents(
    accepted: pd.DataFrame, *, file_name: str, sha256: str, now: datetime
) -> Iterator[dict[str, Any]]:
    """The `tm2_records` documents of an accepted frame, one by one."""
    batches = record_document_batches(accepted, file_name=file_name, sha256=sha256, now=now, batch_size=5000)
    return itertools.chain.from_iterable(batches)


def _content_update(document: dict[str, Any]) -> UpdateOne:
    """Overwrite content, source and updated_at when the stored hash differs; first_seen_at stays."""
    changes = {name: value for name, value in document.items() if name not in ("_id", "first_seen_at")}
    return UpdateOne(
        {"_id": document["_id"], "content_hash": {"$ne": document["content_hash"]}}, {"$set": changes}
    )


class RecordStore:
    """Writes accepted records in batches: one `$in` read, one unordered insert, one unordered update.

    A batch whose probe (one `$in` query on a sample of its keys spread across it) finds nothing
    stored skips the read: it is inserted at once, and the keys that turn out to exist come back as
    duplicate-key errors to be compared by the update's hash filter instead. A first load, the
    common case, then costs one insert per batch; a wrong guess costs only failed inserts.

    `lookup_keys` caps the keys of one `$in` query (None: decided from the server on first use).
    `turns` is the lease stores of different files take turns by (`store_turns`).
    """

    def __init__(
        self,
        db: Database,
        batch_size: int = 5000,
        *,
        target: str | None = None,
        lookup_keys: int | None = None,
        turns: StoreTurns | None = None,
    ) -> None:
        if batch_size < 1 or (lookup_keys is not None and lookup_keys < 1):
            raise ValueError("batch_size and lookup_keys must be at least 1")
        self.db = db
        self.batch_size = batch_size
        self.target = target or client_target(db.client)
        self._lookup_keys = lookup_keys
        self.turns = turns or StoreTurns(db)
        self._moved = False  # whether the current `store` call has moved the generation yet

    @property
    def lookup_keys(self) -> int:
        if self._lookup_keys is None:
            with translate_mongo_errors(self.target):
                self._lookup_keys = lookup_chunk_size(self.db, self.batch_size)
        return self._lookup_keys

    @property
    def collection(self) -> Collection:
        return self.db[RECORDS_COLLECTION]

    def store(
        self,
        accepted: AcceptedFrames,
        *,
        file_name: str,
        sha256: str,
        now: datetime,
        on_wait: Callable[[str], None] | None = None,
        run_id: str | None = None,
    ) -> StoreCounts:
        """Insert new keys, update changed content, leave identical content untouched; exact counts.

        `accepted` is one frame or an iterable of frames (a table read back in batches). The writes
        wait for the store's turn (`store_turns`): `on_wait` hears, once, which file holds it; a
        retry within the same `run_id` resumes the place in line its failed attempt left.

        A batch interrupted by an outage leaves whole documents only; running the same file again
        completes it (what is already stored counts as unchanged).
        """
        batches = record_document_batches(
            accepted, file_name=file_name, sha256=sha256, now=now, batch_size=self.batch_size
        )
        counts = StoreCounts()
        with translate_mongo_errors(self.target), self.turns.turn(file_name, sha256, on_wait, run_id):
            before = self.generation()
            self._moved = False
            try:
                for batch in batches:
                    self.turns.keep()  # renewed while reading too: a re-store may write nothing for long
                    counts += self._store_batch(batch)
                if self._moved:
                    # A write slower than the lease may have landed after a takeover: then this store
                    # fails (its retry stores the file whole again) rather than count itself current.
                    self.turns.keep(now_or_never=True)
            except StoreTurnLost:
                # A write of ours may have landed after the new holder compared that record: its
                # outcome must not be taken as current.
                self._next_generation()
                raise
            if self._moved:
                # Again after the last write: a store that wrote anything while this one ran shows
                # as a move this one did not make, whenever it started (`_before_writing`).
                self._next_generation()
            after = self.generation()
        current = after == before + (2 if self._moved else 0)
        return replace(counts, generation=after if current else None)

    def generation(self) -> int:
        """A counter that moves whenever any file inserts or updates a record.

        A file stored at generation g is still exactly what the store holds while the counter is g:
        re-ingesting the same bytes can then skip the store entirely.
        """
        with translate_mongo_errors(self.target):
            state = self.db[META_COLLECTION].find_one({"_id": RECORDS_COLLECTION}, {"generation": 1})
        return int(state["generation"]) if state else 0

    def _next_generation(self) -> None:
        # An upsert, not find_one_and_update: SecantusDB answers None to the losers of concurrent
        # upserts that create the counter (the count itself ends right).
        self.db[META_COLLECTION].update_one(
            {"_id": RECORDS_COLLECTION}, {"$inc": {"generation": 1}}, upsert=True
        )

    def find_by_keys(self, keys: Iterable[str]) -> list[dict[str, Any]]:
        """The stored documents of these keys, in the order given (unknown keys are skipped)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, dict[str, Any]] = {}
        with translate_mongo_errors(self.target):
            for chunk in chunked(wanted, self.lookup_keys):
                found.update((doc["_id"], doc) for doc in self.collection.find({"_id": {"$in": chunk}}))
        return [found[key] for key in wanted if key in found]

    def count_keys(self, keys: Iterable[str]) -> int:
        """How many of these (distinct) keys have a stored document."""
        wanted = list(dict.fromkeys(keys))
        with translate_mongo_errors(self.target):
            return sum(
                self.collection.count_documents({"_id": {"$in": chunk}})
                for chunk in chunked(wanted, self.lookup_keys)
            )

    def count(self) -> int:
        with translate_mongo_errors(self.target):
            return self.collection.count_documents({})

    def sources_of_versions(self, file_name: str, sha256s: Sequence[str]) -> Iterator[tuple[str, str, int]]:
        """(key, sha256, row) of the records last written from these contents under this file name
        (the same bytes may have come under another name too)."""
        if not sha256s:
            return
        query = {"source.sha256": {"$in": list(sha256s)}, "source.file": file_name}
        with translate_mongo_errors(self.target):  # around the iteration: the cursor reads in batches
            for document in self.collection.find(query, {"source.sha256": 1, "source.row": 1}):
                source = document.get("source") or {}
                yield document["_id"], source.get("sha256", ""), int(source.get("row") or 0)

    def content_hashes(self, keys: Sequence[str]) -> dict[str, str]:
        """content_hash of the stored keys among `keys`."""
        with translate_mongo_errors(self.target):
            return self._existing_hashes(list(keys))

    def _existing_hashes(self, keys: list[str]) -> dict[str, str]:
        """content_hash of the stored keys among `keys` (one query, or SecantusDB-sized chunks)."""
        existing: dict[str, str] = {}
        for chunk in chunked(keys, self.lookup_keys):
            cursor = self.collection.find({"_id": {"$in": chunk}}, {"content_hash": 1})
            existing.update((doc["_id"], doc.get("content_hash")) for doc in cursor)
        return existing

    def _probe_finds_stored(self, keys: list[str]) -> bool:
        """Whether any of `lookup_keys` keys sampled evenly across the batch is already stored."""
        step = max(1, len(keys) // self.lookup_keys)
        sample = keys[::step][: self.lookup_keys]
        return self.collection.find_one({"_id": {"$in": sample}}, {"_id": 1}) is not None

    def _store_batch(self, batch: list[dict[str, Any]]) -> StoreCounts:
        keys = [document["_id"] for document in batch]
        if not self._probe_finds_stored(keys):
            inserted, present = self._insert(batch)
            updated = self._update(present)
            return StoreCounts(inserted=inserted, updated=updated, unchanged=len(batch) - inserted - updated)
        existing = self._existing_hashes(keys)
        new, changed = [], []
        for document in batch:
            stored_hash = existing.get(document["_id"], _ABSENT)
            if stored_hash is _ABSENT:
                new.append(document)
            elif stored_hash != document["content_hash"]:
                changed.append(document)
        inserted, raced = self._insert(new)
        updated = self._update(changed + raced)
        return StoreCounts(inserted=inserted, updated=updated, unchanged=len(batch) - inserted - updated)

    def _before_writing(self) -> None:
        """Before every write, keep the store's turn. Move the generation before the first write of a
        `store` call (and after its last, `store`): a store that fails midway has still changed
        records, and no file stored earlier may be skipped; one that ran alongside another store (its
        turn taken over meanwhile) must not let that one be skipped either."""
        self.turns.keep()
        if not self._moved:
            self._next_generation()
            self._moved = True

    def _insert(self, documents: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
        """Insert; documents whose key is already stored (by an earlier file, or by another writer
        since our read) come back to be compared instead."""
        if not documents:
            return 0, []
        self._before_writing()
        present = insert_new(self.collection, documents)
        return len(documents) - len(present), present

    def _update(self, documents: list[dict[str, Any]]) -> int:
        """Apply content updates; the count is of documents whose stored hash really differed."""
        if not documents:
            return 0
        self._before_writing()
        result = self.collection.bulk_write([_content_update(doc) for doc in documents], ordered=False)
        return result.matched_count


_ABSENT = object()
