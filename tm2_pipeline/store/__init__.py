"""The MongoDB store: stored records, rejected rows, the ingestion ledger and their indexes.

Plain pymongo on a `Database` handed in by `tm2_pipeline.resources.mongo.MongoResource`.
"""

from tm2_pipeline.store.errors import MongoRefused, MongoUnavailable, RecordFrameError
from tm2_pipeline.store.ingestions import IngestionLedger, IngestionStatus
from tm2_pipeline.store.records import RecordStore, StoreCounts
from tm2_pipeline.store.rejects import RejectStore

__all__ = [
    "IngestionLedger",
    "IngestionStatus",
    "MongoRefused",
    "MongoUnavailable",
    "RecordFrameError",
    "RecordStore",
    "RejectStore",
    "StoreCounts",
]
