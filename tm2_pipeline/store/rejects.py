"""Rejected rows (`tm2_rejects`): one document per (file sha256, row), so re-ingesting never duplicates.

Raw values are stored as a list of {column, value} pairs, not as a sub-document: a CSV header is
arbitrary text (dots, a leading `$`) and must not become a MongoDB field name. `for_file` returns
them as a dict again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pymongo import ReplaceOne
from pymongo.collection import Collection
from pymongo.database import Database

from tm2_pipeline.store.errors import client_target, insert_new, translate_outage
from tm2_pipeline.store.indexes import REJECTS_COLLECTION
from tm2_pipeline.store.timestamps import stored_timestamp

# Keys per `$in` delete: small, for SecantusDB's sake (see records.SECANTUS_LOOKUP_KEYS).
STALE_DELETE_KEYS = 40


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
        documents[key] = {
            "_id": key,
            "file": file_name,
            "sha256": sha256,
            "partition": partition,
            "row": row,
            "values": [{"column": str(name), "value": value} for name, value in rejected["values"].items()],
            "reasons": list(rejected["reasons"]),
            "recorded_at": stamp,
        }
    return documents


def _differs(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """True when anything but the time it was recorded differs."""
    return any(stored.get(name) != value for name, value in wanted.items() if name != "recorded_at")


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

        Each row is {row: int, values: {column: raw value}, reasons: [str, ...]}. Idempotent: rows
        already stored as given are not written again (their `recorded_at` stays); new rows are
        inserted in bulk, changed ones replaced, rows no longer rejected removed. Rows are written
        before stale ones go, so a reader never sees the file without its rejects.
        """
        wanted = _reject_documents(file_name, sha256, partition, rejected_rows, stored_timestamp(now))
        with translate_outage(self.target):
            stored = {doc["_id"]: doc for doc in self.collection.find({"sha256": sha256})}
            new = [doc for key, doc in wanted.items() if key not in stored]
            changed = [doc for key, doc in wanted.items() if key in stored and _differs(stored[key], doc)]
            changed += insert_new(self.collection, new)  # a concurrent run's rows come back to replace
            if changed:
                self.collection.bulk_write(
                    [ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in changed], ordered=False
                )
            stale = [key for key in stored if key not in wanted]
            for start in range(0, len(stale), STALE_DELETE_KEYS):
                self.collection.delete_many({"_id": {"$in": stale[start : start + STALE_DELETE_KEYS]}})
        return len(wanted)

    def for_file(self, sha256: str) -> list[dict[str, Any]]:
        """The rejects of one file content, by row, with `values` as a {column: value} dict."""
        with translate_outage(self.target):
            documents = list(self.collection.find({"sha256": sha256}).sort("row", 1))
        for document in documents:
            document["values"] = {pair["column"]: pair["value"] for pair in document["values"]}
        return documents

    def count(self) -> int:
        with translate_outage(self.target):
            return self.collection.count_documents({})
