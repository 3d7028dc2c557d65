"""The ingestion ledger (`tm2_ingestions`): the latest outcome of each (file name, content) ingestion."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from pymongo import DESCENDING
from pymongo.collection import Collection
from pymongo.database import Database

from tm2_pipeline.store.errors import client_target, translate_outage
from tm2_pipeline.store.indexes import INGESTIONS_COLLECTION
from tm2_pipeline.store.timestamps import stored_timestamp

MAX_ERROR_CHARS = 2000

COUNT_NAMES = (
    "rows",
    "accepted",
    "duplicates",
    "rejected",
    "inserted",
    "updated",
    "unchanged",
    "submitted",
    "submission_failed",
)


class IngestionStatus(StrEnum):
    SUCCEEDED = "succeeded"
    REFUSED = "refused"  # the file could not be read as a TM2 export
    BLOCKED = "blocked"  # a blocking check stopped it (e.g. too many rejects)
    FAILED = "failed"  # an error (MongoDB or OpenMRS unreachable, a bug)
    DRY_RUN = "dry_run"


def ingestion_id(file_name: str, sha256: str) -> str:
    return f"{file_name}:{sha256}"


class IngestionLedger:
    def __init__(self, db: Database, *, target: str | None = None) -> None:
        self.db = db
        self.target = target or client_target(db.client)

    @property
    def collection(self) -> Collection:
        return self.db[INGESTIONS_COLLECTION]

    def record(
        self,
        *,
        file_name: str,
        sha256: str,
        size: int,
        status: IngestionStatus | str,
        counts: Mapping[str, int],
        at: datetime,
        error: str | None = None,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Store the outcome of ingesting this file content (replacing an earlier attempt's); returns it.

        `error` must already be free of PHI and secrets: it is shown by `tm2 status`.
        """
        unknown = sorted(set(counts) - set(COUNT_NAMES))
        if unknown:
            raise ValueError(f"unknown ingestion count(s): {', '.join(unknown)}")
        document = {
            "_id": ingestion_id(file_name, sha256),
            "file": file_name,
            "sha256": sha256,
            "size": int(size),
            "status": IngestionStatus(status).value,
            "counts": {name: int(counts[name]) for name in COUNT_NAMES if name in counts},
            "error": error[:MAX_ERROR_CHARS] if error else None,
            "at": stored_timestamp(at),
            "run_id": run_id,
        }
        with translate_outage(self.target):
            self.collection.replace_one({"_id": document["_id"]}, document, upsert=True)
        return document

    def latest_for_file(self, file_name: str) -> dict[str, Any] | None:
        """The most recent ingestion of any content under this file name."""
        with translate_outage(self.target):
            return self.collection.find_one({"file": file_name}, sort=[("at", DESCENDING)])

    def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest ingestions of any file, newest first."""
        with translate_outage(self.target):
            return list(self.collection.find().sort([("at", DESCENDING), ("_id", DESCENDING)]).limit(limit))
