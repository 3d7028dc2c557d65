"""The indexes every collection of the store needs; created idempotently at start-up.

SecantusDB (the embedded store) refuses text indexes and `$where` by design: none are used here.
"""

from __future__ import annotations

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database

RECORDS_COLLECTION = "tm2_records"
REJECTS_COLLECTION = "tm2_rejects"
INGESTIONS_COLLECTION = "tm2_ingestions"
SUBMISSIONS_COLLECTION = "openmrs_submissions"
# Small bookkeeping documents (the records' store generation); keyed by the collection they describe.
META_COLLECTION = "tm2_meta"

# Explicit names keep re-creation a no-op and make the indexes recognisable in a shell.
INDEXES: dict[str, list[IndexModel]] = {
    RECORDS_COLLECTION: [
        IndexModel([("patient_id", ASCENDING), ("diagnosis_date", ASCENDING)], name="patient_date"),
        IndexModel([("tm2_code", ASCENDING)], name="tm2_code"),
        IndexModel([("source.sha256", ASCENDING)], name="source_sha256"),
    ],
    REJECTS_COLLECTION: [
        IndexModel([("sha256", ASCENDING), ("row", ASCENDING)], name="sha256_row"),
        IndexModel([("file", ASCENDING)], name="file"),
    ],
    INGESTIONS_COLLECTION: [
        IndexModel([("file", ASCENDING), ("at", DESCENDING)], name="file_at"),
        # `tm2 status` lists the most recent ingestions of any file.
        IndexModel([("at", DESCENDING)], name="at"),
    ],
    SUBMISSIONS_COLLECTION: [
        IndexModel([("state", ASCENDING)], name="state"),
        IndexModel([("state", ASCENDING), ("updated_at", ASCENDING)], name="state_updated_at"),
    ],
}


def ensure_indexes(db: Database) -> None:
    """Create every index of the store (a no-op for those that exist)."""
    for collection, indexes in INDEXES.items():
        db[collection].create_indexes(indexes)
