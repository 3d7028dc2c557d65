"""Stores of different files take turns: one lease document in `tm2_meta`, held while a file's
records are written.

Two files that share records (a corrected re-export landing while the original is being ingested)
used to interleave their writes, and each won some of the shared records. Taking turns, each file's
content lands whole, in the order the stores run. Validation and the OpenMRS step still run side by
side; only the writes wait.

The lease is wall time (`time.time()`), renewed while the holder writes. A holder that dies leaves it
to run out (`LEASE_S`); a holder that stalls past it loses its turn and fails its step at its next
batch (the step's retry stores the file again, idempotently).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from tm2_pipeline.store.indexes import META_COLLECTION

TURN_ID = "store_turn"
# Long enough for one batch on a slow server; a dead holder keeps others waiting this long at most.
LEASE_S = 120.0
RENEW_AFTER_S = 15.0
# Polling a held lease: first quickly (a short store), then every few seconds.
FIRST_POLL_S = 0.2
MAX_POLL_S = 3.0


class StoreTurnLost(RuntimeError):
    """This store's lease ran out and another store took the turn: its writes must stop."""


class StoreTurns:
    """The lease; `turn(file_name)` holds it for a block, waiting while another store holds it."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.collection = db[META_COLLECTION]
        self.clock = clock
        self.sleep = sleep
        self._token: str | None = None
        self._renewed_at = 0.0

    @contextlib.contextmanager
    def turn(self, file_name: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Wait for the turn, hold it for the block, give it up after (also on error)."""
        self._take(file_name, on_wait)
        try:
            yield
        except BaseException:
            # The block's own error is what counts; a lease left behind runs out by itself.
            with contextlib.suppress(PyMongoError):
                self._give_up()
            raise
        self._give_up()

    def keep(self) -> None:
        """Called before each write: renews the lease when due; raises `StoreTurnLost` once another
        store has taken it."""
        if self._token is None:
            raise StoreTurnLost("the store wrote without holding its turn")
        now = self.clock()
        if now - self._renewed_at < RENEW_AFTER_S:
            return
        renewed = self.collection.update_one(
            {"_id": TURN_ID, "holder": self._token}, {"$set": {"until": now + LEASE_S}}
        )
        if not renewed.matched_count:
            self._token = None
            raise StoreTurnLost(
                f"this store went {now - self._renewed_at:.0f} s without renewing its turn (lease"
                f" {LEASE_S:.0f} s) and another file's store took it; the step stores the file again when"
                " retried"
            )
        self._renewed_at = now

    def _take(self, file_name: str, on_wait: Callable[[str], None] | None) -> None:
        self._ensure_document()
        token, poll, told = uuid.uuid4().hex, FIRST_POLL_S, False
        while True:
            now = self.clock()
            # A free lease has `until` 0; a dead holder's has run out: one condition covers both.
            taken = self.collection.update_one(
                {"_id": TURN_ID, "until": {"$lt": now}},
                {"$set": {"holder": token, "file": file_name, "until": now + LEASE_S}},
            )
            if taken.matched_count:
                self._token, self._renewed_at = token, now
                return
            if on_wait is not None and not told:
                current = self.collection.find_one({"_id": TURN_ID}, {"file": 1}) or {}
                on_wait(f"waiting for the store of {current.get('file') or 'another file'} to finish")
                told = True
            self.sleep(poll)
            poll = min(poll * 2, MAX_POLL_S)

    def _give_up(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            self.collection.update_one(
                {"_id": TURN_ID, "holder": token}, {"$set": {"holder": None, "file": None, "until": 0.0}}
            )

    def _ensure_document(self) -> None:
        # Another store may create it at the same moment.
        with contextlib.suppress(DuplicateKeyError):
            self.collection.update_one(
                {"_id": TURN_ID}, {"$setOnInsert": {"holder": None, "file": None, "until": 0.0}}, upsert=True
            )
