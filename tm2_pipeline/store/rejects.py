"""Rejected rows (`tm2_rejects`): one document per (file sha256, row), so re-ingesting never duplicates.

Raw values are stored as a list of {column, value} pairs, not as a sub-document: a CSV header is
arbitrary text (dots, a leading `$`) and must not become a MongoDB field name. `for_file` returns
them as a dict again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import bson
from pymongo import ReplaceOne
from pymongo.collection import Collection
from pymongo.database import Database

from tm2_pipeline.store.errors import client_target, insert_new, translate_mongo_errors
from tm2_pipeline.store.indexes import REJECTS_COLLECTION
from tm2_pipeline.store.timestamps import stored_timestamp

# Keys per `$in` delete: small, for SecantusDB's sake (see records.SECANTUS_LOOKUP_KEYS).
STALE_DELETE_KEYS = 40
# What one reject keeps of its row's values: a document may not pass 16 MB, and a ragged "row" can
# be a whole pasted block (README, Known limits). The file's bytes are kept whole under TM2_HOME.
MAX_VALUE_CHARS = 4096
MAX_LISTED_VALUES = 100
CUT_MARK = " [cut]"


def reject_id(sha256: str, row: int) -> str:
    return f"{sha256}:{row}"


def _reject_documents(
    file_name: str, sha256: str, partition: str, rejected_rows: Iterable[Mapping[str, Any]], stamp: datetime
) -> dict[str, dict[str, Any]]:
    documents: dict[str, dict[str, Any]] = {}
    for rejected in rejected_rows:
        row = rejected["row"]
        if not isinstance(row, int) or isinstance(row, bool):
            raise TypeError("a rejected row's `row` must be an int")
        key = reject_id(sha256, row)
        if key in documents:
            raise ValueError("rejected rows repeat a row number")
        values, cut = _bounded_values(rejected["values"])
        documents[key] = {
            "_id": key,
            "file": file_name,
            "sha256": sha256,
            "partition": partition,
            "row": row,
            "values": [{"column": str(name), "value": value} for name, value in values.items()],
            "reasons": list(rejected["reasons"]),
            "recorded_at": stamp,
        }
        if cut:
            documents[key]["values_cut"] = True
    return documents


def _bounded_values(values: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The row's values, each text at most MAX_VALUE_CHARS and each list (a ragged row's extra fields)
    at most MAX_LISTED_VALUES long; whether anything was cut (marked with CUT_MARK)."""
    cut = False

    def bounded(value: Any) -> Any:
        nonlocal cut
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            cut = True
            return value[:MAX_VALUE_CHARS] + CUT_MARK
        if isinstance(value, list):
            if len(value) > MAX_LISTED_VALUES:
                cut = True
                return [bounded(item) for item in value[:MAX_LISTED_VALUES]] + [CUT_MARK.strip()]
            return [bounded(item) for item in value]
        return value

    return {name: bounded(value) for name, value in values.items()}, cut


def _content_digest(document: Mapping[str, Any]) -> bytes:
    """What a reject says, but for when it was recorded: equal digests, nothing to write."""
    content = {name: value for name, value in document.items() if name != "recorded_at"}
    return hashlib.sha256(bson.encode(content)).digest()


class RejectStore:
    def __init__(self, db: Database, *, target: str | None = None) -> None:
        self.db = db
        self.target = target or client_target(db.client)

    @property
    def collection(self) -> Collection:
        return self.db[REJECTS_COLLECTION]

    def replace_for_file(
        self,
        file_name: str,
        sha256: str,
        partition: str,
        rejected_rows: Iterable[Mapping[str, Any]],
        now: datetime,
    ) -> int:
        """Make the stored rejects of this file content exactly `rejected_rows`; returns how many.

        Each row is {row: int, values: {column: raw value}, reasons: [str, ...]}. See `replacing`,
        which takes the rows a chunk at a time.
        """
        with self.replacing(file_name, sha256, partition, now) as replacement:
            replacement.write(rejected_rows)
        return replacement.written

    @contextmanager
    def replacing(
        self, file_name: str, sha256: str, partition: str, now: datetime
    ) -> Iterator[RejectReplacement]:
        """Replace the stored rejects of this file content with the rows written, chunk by chunk.

        Idempotent: rows already stored as given are not written again (their `recorded_at` stays);
        new rows are inserted in bulk, changed ones replaced, and when the block ends without an
        error, rows no longer rejected are removed. Rows are written before stale ones go, so a
        reader never sees the file without its rejects; after an error the stale rows stay until
        the next replacement.
        """
        replacement = RejectReplacement(self, file_name, sha256, partition, stored_timestamp(now))
        yield replacement
        replacement.remove_stale()

    def for_file(self, sha256: str) -> list[dict[str, Any]]:
        """The rejects of one file content, by row, with `values` as a {column: value} dict."""
        return list(self.iter_for_file(sha256))

    def iter_for_file(self, sha256: str) -> Iterator[dict[str, Any]]:
        """`for_file` read as it is consumed (a file can have hundreds of thousands of rejects)."""
        with translate_mongo_errors(self.target):
            for document in self.collection.find({"sha256": sha256}).sort("row", 1):
                document["values"] = {pair["column"]: pair["value"] for pair in document["values"]}
                yield document

    def count(self) -> int:
        with translate_mongo_errors(self.target):
            return self.collection.count_documents({})

    def remove_for_file(self, sha256: str) -> None:
        """Forget the rejects of one file content (a file refused as a whole has none)."""
        with translate_mongo_errors(self.target):
            self.collection.delete_many({"sha256": sha256})


class RejectReplacement:
    """One file content's rejects being replaced; see `RejectStore.replacing`.

    It holds a digest of each row stored before (about 150 bytes a row) and nothing of the rows
    written, so replacing the rejects of a large file does not hold them all.
    """

    def __init__(
        self, store: RejectStore, file_name: str, sha256: str, partition: str, stamp: datetime
    ) -> None:
        self.store = store
        self.file_name, self.sha256, self.partition, self.stamp = file_name, sha256, partition, stamp
        with translate_mongo_errors(store.target):
            # Rows stored earlier and not written again yet; what is left at the end is stale.
            self.unwritten = {
                doc["_id"]: _content_digest(doc) for doc in store.collection.find({"sha256": sha256})
            }
        self.written = 0
        self._last_row: int | None = None

    def write(self, rejected_rows: Iterable[Mapping[str, Any]]) -> None:
        """Store these rejected rows (each row number once over the whole replacement)."""
        wanted = _reject_documents(self.file_name, self.sha256, self.partition, rejected_rows, self.stamp)
        if not wanted:
            return
        rows = [doc["row"] for doc in wanted.values()]
        if self._last_row is not None and min(rows) <= self._last_row:
            raise ValueError("rejected rows written in parts must come in row order")
        self._last_row = max(rows)
        collection = self.store.collection
        new, changed = [], []
        for key, doc in wanted.items():
            stored = self.unwritten.pop(key, None)
            if stored is None:
                new.append(doc)
            elif stored != _content_digest(doc):
                changed.append(doc)
        with translate_mongo_errors(self.store.target):
            changed += insert_new(collection, new)  # a concurrent run's rows come back to replace
            if changed:
                collection.bulk_write(
                    [ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in changed], ordered=False
                )
        self.written += len(wanted)

    def remove_stale(self) -> None:
        """Remove the rows stored before and not written in this replacement."""
        stale = list(self.unwritten)
        with translate_mongo_errors(self.store.target):
            for start in range(0, len(stale), STALE_DELETE_KEYS):
                self.store.collection.delete_many({"_id": {"$in": stale[start : start + STALE_DELETE_KEYS]}})
        self.unwritten = {}
