"""The record store read again while records are sent: the store's content wins over a copy read
earlier. Before a chunk is planned (`current`), before a correction is sent (`stored_hash`), and after
outcomes are written (`overtaken`): a file may store newer content for a record at any moment, and
the run that stored it may find the record held by this one and leave it to it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from tm2_pipeline.openmrs.record_exchange import SubmissionLogLike
from tm2_pipeline.openmrs.states import Attempt, SubmissionOutcome

Record = Mapping[str, Any]
# How often one run plans a record again because newer content was stored while it sent it.
MAX_REPLANS = 2
OVERTAKEN_NOTE = "newer content was stored while this was sent: to be sent again with it"


class StoredRecords(Protocol):
    """The record store (`RecordStore`)."""

    def content_hashes(self, keys: Sequence[str]) -> dict[str, str]: ...
    def find_by_keys(self, keys: Iterable[str]) -> list[dict[str, Any]]: ...


class StoreCheck:
    def __init__(
        self, store: StoredRecords, log: SubmissionLogLike, now: datetime, clock: Callable[[], datetime]
    ) -> None:
        self.store, self.log, self.now, self.clock = store, log, now, clock
        self.replanned: Counter[str] = Counter()  # how often each key was planned again

    def current(self, records: Sequence[Record]) -> Sequence[Record]:
        """The store's content now. The batch was read a while ago: another file may have stored newer
        content for a key since, and been sent; planning the older copy would put it back in OpenMRS."""
        hashes = self.store.content_hashes([record["_id"] for record in records])
        stale = [r["_id"] for r in records if hashes.get(r["_id"], r["content_hash"]) != r["content_hash"]]
        if not stale:
            return records
        fresh = {document["_id"]: document for document in self.store.find_by_keys(stale)}
        return [fresh.get(record["_id"], record) for record in records]

    def stored_hash(self, key: str) -> str | None:
        """One record's content hash now (`RecordExchange.overtaken`, right before a correction)."""
        return self.store.content_hashes([key]).get(key)

    def overtaken(self, outcomes: Sequence[SubmissionOutcome]) -> tuple[list[Record], set[str]]:
        """Records whose stored content changed while this run sent an older copy: the stored records
        to plan again, and the keys left to a later run (planned again MAX_REPLANS times already, so
        that no run loops).

        Read after the outcomes are written: newer content stored later than this read is planned by
        the run that stored it, which then finds the log's entry no longer held by this run. Without
        it, that run (refused while this one held the record) and this one (ending with the older
        copy confirmed) would each leave the newer content unsent. They are `failed_retryable` in the
        log first, so that a run stopping before it plans them again leaves them to the nightly retry.
        """
        ended = [o for o in outcomes if not o.in_doubt and o.content_hash is not None]
        stored = self.store.content_hashes([o.key for o in ended]) if ended else {}
        changed = [o for o in ended if stored.get(o.key, o.content_hash) != o.content_hash]
        if not changed:
            return [], set()
        note = Attempt(at=self.clock(), method="-", status=None, message=OVERTAKEN_NOTE)
        self.log.send_again([(o.key, o.content_hash) for o in changed if o.content_hash], note, self.now)
        again = [o.key for o in changed if self.replanned[o.key] < MAX_REPLANS]
        self.replanned.update(again)
        return self.store.find_by_keys(again) if again else [], {o.key for o in changed} - set(again)

    def leave_unchecked(self, outcomes: Sequence[SubmissionOutcome]) -> None:
        """A run stopping early (interrupted, the log failing): outcomes not yet checked are checked
        now, and records stored anew meanwhile left to the nightly retry (none planned again)."""
        self.replanned.update({outcome.key: MAX_REPLANS for outcome in outcomes})
        self.overtaken(outcomes)
