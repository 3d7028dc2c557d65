"""The ingestion ledger (`tm2_ingestions`): the latest outcome of each (file name, content) ingestion.

Read by `tm2 status` (recent ingestions) and `tm2 rejects NAME` (the latest content of a file name).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from pymongo import DESCENDING
from pymongo.collection import Collection
from pymongo.database import Database

from tm2_pipeline.store.errors import client_target, translate_mongo_errors
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
    "not_in_this_version",  # stored from other versions of the name, not in this one (they stay)
    "submitted",
    "in_openmrs",
    "submission_failed",
    "needs_a_person",
)


class IngestionStatus(StrEnum):
    VALIDATED = "validated"  # a stage outcome: rows checked, nothing stored yet
    STORED = "stored"  # a stage outcome: records in MongoDB, OpenMRS not done yet
    SUCCEEDED = "succeeded"
    REFUSED = "refused"  # the file could not be read as a TM2 export
    BLOCKED = "blocked"  # a blocking check stopped it (e.g. too many rejects)
    FAILED = "failed"  # an error (MongoDB or OpenMRS unreachable, a bug)
    DRY_RUN = "dry_run"


def ingestion_id(file_name: str, sha256: str) -> str:
    return f"{file_name}:{sha256}"


class IngestionLedger:
    """One document per (file name, content); each stage of a run records its outcome into it."""

    def __init__(self, db: Database, *, target: str | None = None) -> None:
        self.db = db
        self.target = target or client_target(db.client)

    @property
    def collection(self) -> Collection:
        return self.db[INGESTIONS_COLLECTION]

    def record_outcome(
        self,
        *,
        file: str,
        sha256: str,
        status: IngestionStatus | str,
        at: datetime,
        counts: Mapping[str, int] | None = None,
        size: int | None = None,
        error: str | None = None,
        run_id: str | None = None,
        store_generation: int | None = None,
        stored_table: str | None = None,
    ) -> None:
        """Upsert the outcome of ingesting this file content.

        status, at, error and run_id are replaced; `counts` are merged name by name (each stage of a
        run reports its own: rows/accepted/..., then inserted/..., then submitted/...), so a re-run
        overwrites the counts it reports and keeps the others. `error` must already be free of PHI
        and secrets: `tm2 status` shows it.
        """
        counts = counts or {}
        changes: dict[str, Any] = {
            "file": file,
            "sha256": sha256,
            "status": IngestionStatus(status).value,
            "error": error[:MAX_ERROR_CHARS] if error else None,
            "at": stored_timestamp(at),
            "run_id": run_id,
        }
        changes.update(_count_changes(counts))
        if size is not None:
            changes["size"] = int(size)
        if status == IngestionStatus.STORED:
            # None clears a generation an earlier run left: the store must be compared again.
            changes["store_generation"] = store_generation
            # Which validation of the bytes was stored: another day or other rules may accept other rows.
            changes["stored_table"] = stored_table
        with translate_mongo_errors(self.target):
            self.collection.update_one(
                {"_id": ingestion_id(file, sha256)},
                # `counts` exists even before a stage reports any, so readers need no special case.
                {"$set": changes, **({} if counts else {"$setOnInsert": {"counts": {}}})},
                upsert=True,
            )

    def record_outcome_of_run(
        self,
        run_id: str,
        *,
        file: str,
        sha256: str,
        status: IngestionStatus | str,
        counts: Mapping[str, int],
        at: datetime,
    ) -> bool:
        """Record an outcome for run `run_id` only while the entry is still that run's (a later run
        of the content may have written there since); whether it was. Counts are merged."""
        changes: dict[str, Any] = {
            "status": IngestionStatus(status).value,
            "error": None,
            "at": stored_timestamp(at),
            **_count_changes(counts),
        }
        with translate_mongo_errors(self.target):
            result = self.collection.update_one(
                {"_id": ingestion_id(file, sha256), "run_id": run_id}, {"$set": changes}
            )
        return result.matched_count == 1

    def entry(self, file: str, sha256: str) -> dict[str, Any] | None:
        """The ledger entry of this very content under this name, or None."""
        with translate_mongo_errors(self.target):
            return self.collection.find_one({"_id": ingestion_id(file, sha256)})

    def latest_for_file(self, file_name: str) -> dict[str, Any] | None:
        """The most recent ingestion of any content under this file name."""
        with translate_mongo_errors(self.target):
            return self.collection.find_one({"file": file_name}, sort=[("at", DESCENDING)])

    def other_versions(self, file_name: str, sha256: str) -> list[str]:
        """The sha256 of every other content ingested under this file name."""
        with translate_mongo_errors(self.target):
            found = self.collection.find({"file": file_name}, {"sha256": 1})
            return sorted({entry["sha256"] for entry in found} - {sha256})

    def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest ingestions of any file, newest first."""
        with translate_mongo_errors(self.target):
            return list(self.collection.find().sort([("at", DESCENDING), ("_id", DESCENDING)]).limit(limit))


def _count_changes(counts: Mapping[str, int]) -> dict[str, int]:
    """`$set` changes merging these counts name by name into the entry's `counts`."""
    unknown = sorted(set(counts) - set(COUNT_NAMES))
    if unknown:
        raise ValueError(f"unknown ingestion count(s): {', '.join(unknown)}")
    return {f"counts.{name}": int(value) for name, value in counts.items()}
