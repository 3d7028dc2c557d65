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

from tm2_pipeline.store.errors import client_target, translate_outage
from tm2_pipeline.store.indexes import REJECTS_COLLECTION
from tm2_pipeline.store.timestamps import stored_timestamp


def reject_id(sha256: str, row: int) -> str:
    return f"{sha256}:{row}"


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

        Each row is {row: int, values: {column: raw value}, reasons: [str, ...]}. Rows are upserted
        before stale ones are removed, so a reader never sees the file without its rejects.
        """
        stamp = stored_timestamp(now)
        replacements, rows = [], []
        for rejected in rejected_rows:
            row = rejected["row"]
            if not isinstance(row, int) or isinstance(row, bool):
                raise TypeError("a rejected row's `row` must be an int")
            rows.append(row)
            document = {
                "file": file_name,
                "sha256": sha256,
                "partition": partition,
                "row": row,
                "values": [{"column": str(k), "value": v} for k, v in rejected["values"].items()],
                "reasons": list(rejected["reasons"]),
                "recorded_at": stamp,
            }
            replacements.append(ReplaceOne({"_id": reject_id(sha256, row)}, document, upsert=True))
        if len(set(rows)) != len(rows):
            raise ValueError("rejected rows repeat a row number")
        with translate_outage(self.target):
            if replacements:
                self.collection.bulk_write(replacements, ordered=False)
            self.collection.delete_many({"sha256": sha256, "row": {"$nin": rows}})
        return len(rows)

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
