"""Stores of different files take turns: one lease document in `tm2_meta`, held while a file's
records are written.

Two files that share records (a corrected re-export landing while the original is being ingested)
used to interleave their writes, and each won some of the shared records. Taking turns, each file's
content lands whole, in the order the stores asked for the turn. Validation and the OpenMRS step
still run side by side; only the stores wait.

No wall clock is compared between processes (run workers may sit on hosts whose clocks differ):
- the turn is first come, first served: a store joins the end of a line (an array in the lease,
  appended to in one write, so no later store can pass it while it joins) and waits until it is
  the first live entry. A waiter beats a counter while it waits, so the others can tell a dead one
  (its counter stands still for `WAITER_STALE_S`) and pass it; one passed that way and back joins
  the end again. A store whose wait failed on a MongoDB error (a failover) keeps its place, and its
  step's retry (the same run) resumes it under a new token, if it comes before it is passed;
- the holder counts a renewal at its first batch or write `RENEW_AFTER_S` after the last. A waiter
  takes the turn over when that count has stood still for `LEASE_S` by its own monotonic clock (the
  holder died; a stall of the waiter's own counts as `MAX_POLL_GAP_S` at most), and only if it
  still stands (a compare-and-set on the holder and the count): a holder that comes back finds its
  turn gone at its next renewal (`StoreTurnLost`);
- a store that fails keeps the turn: its writes may still be landing (a server may finish a write
  whose client gave up), and its step's retry takes it back at once, ahead of the line (the same file
  name and content: two runs of one file name never run at once), so a failure does not let a later
  file's store in before the file is stored whole. Others take it over after `LEASE_S`.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from tm2_pipeline.store.indexes import META_COLLECTION

TURN_ID = "store_turn"
# A holder whose renewals stand still this long is taken for dead (a batch takes seconds).
LEASE_S = 120.0
RENEW_AFTER_S = 15.0
# A waiter that stopped beating this long (killed while waiting) no longer holds up the line.
WAITER_STALE_S = 20.0
# The head of the line polls often; the others only beat (the line keeps their order).
POLL_S = 0.5
WAITING_POLL_S = 2.0
# A waiter counts a longer gap between two of its polls as this long only: it was stalled itself
# (a paused VM, a server failover), and what it watched may have been stalled alike.
MAX_POLL_GAP_S = 5.0


class StoreTurnLost(RuntimeError):
    """This store's renewals stood still past the lease and another store took the turn over."""


@dataclass
class _Watched:
    """A value in the lease document and when this waiter first saw it so (in its watching time:
    monotonic, a stall of its own counted short, see MAX_POLL_GAP_S)."""

    value: object
    since: float


class StoreTurns:
    """The lease; `turn(file_name, sha256)` holds it for a block, waiting for the stores before it."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.collection = db[META_COLLECTION]
        self.clock = clock
        self.sleep = sleep
        self._token: str | None = None
        self._renewed_at = 0.0
        self._beats = 0  # this process's beats in line; a re-joined entry starts above them
        self._run_id: str | None = None

    @contextlib.contextmanager
    def turn(
        self,
        file_name: str,
        sha256: str,
        on_wait: Callable[[str], None] | None = None,
        run_id: str | None = None,
    ) -> Iterator[None]:
        """Wait for the turn, hold it for the block, give it up after; on error, keep it (above).
        `run_id`: the Dagster run storing, whose step retry may resume a place in line (None: never)."""
        self._run_id = run_id
        self._take(file_name, f"{file_name}:{sha256}", on_wait)
        try:
            yield
        except BaseException:
            self._token = None  # kept for the retry, or taken over after LEASE_S
            raise
        with contextlib.suppress(PyMongoError):  # a turn left behind is taken over after LEASE_S
            self._give_up()

    def keep(self, *, now_or_never: bool = False) -> None:
        """Called before each batch and each write: counts a renewal when one is due (always with
        `now_or_never`, after the last write); raises `StoreTurnLost` once another store took over."""
        if self._token is None:
            raise StoreTurnLost("the store wrote without holding its turn")
        now = self.clock()
        if not now_or_never and now - self._renewed_at < RENEW_AFTER_S:
            return
        renewed = self.collection.update_one(
            {"_id": TURN_ID, "holder": self._token}, {"$inc": {"renewals": 1}}
        )
        if not renewed.matched_count:
            self._token = None
            raise StoreTurnLost(
                f"this store counted no renewal of its turn for {now - self._renewed_at:.0f} s (the lease"
                f" is {LEASE_S:.0f} s) and another file's store took it over; the step stores the file"
                " again when retried"
            )
        self._renewed_at = now

    def _take(self, file_name: str, key: str, on_wait: Callable[[str], None] | None) -> None:
        self._ensure_document()
        token = uuid.uuid4().hex
        # The same file's earlier attempt (a step retry after an outage) left the turn: take it back.
        if self.collection.update_one(
            {"_id": TURN_ID, "key": key}, _taken(token, key, file_name)
        ).matched_count:
            self._token, self._renewed_at = token, self.clock()
            return
        try:
            # Or the same run's place in line: resumed under this attempt's own token, and only while
            # its beat stands (else the earlier attempt still lives, and this one goes behind it).
            earlier = self._place_of(key)
            if earlier is None or not self._resume(earlier, token):
                self._join_line(token, file_name, key)
            self._wait_in_line(token, file_name, key, on_wait)
        except PyMongoError:
            raise  # the place is kept for the step's retry; passed after WAITER_STALE_S if none comes
        except BaseException:
            self._leave_line(token)  # else it holds the line up WAITER_STALE_S
            raise

    def _place_of(self, key: str) -> dict | None:
        if self._run_id is None:
            return None
        lease = self.collection.find_one({"_id": TURN_ID}, {"line": 1}) or {}
        mine = {"key": key, "run": self._run_id}
        return next((waiter for waiter in lease.get("line") or [] if mine.items() <= waiter.items()), None)

    def _resume(self, earlier: dict, token: str) -> bool:
        standing = {"token": earlier.get("token"), "beat": earlier.get("beat")}
        resumed = self.collection.update_one(
            {"_id": TURN_ID, "line": {"$elemMatch": standing}}, {"$set": {"line.$.token": token}}
        )
        if resumed.matched_count:
            self._beats = int(earlier.get("beat") or 0)
        return bool(resumed.matched_count)

    def _wait_in_line(
        self, token: str, file_name: str, key: str, on_wait: Callable[[str], None] | None
    ) -> None:
        taken = _taken(token, key, file_name)
        holder: _Watched | None = None
        waiters: dict[str, _Watched] = {}
        told = False
        last_poll = self.clock()
        watched_s = 0.0  # how long this waiter has watched the lease (see MAX_POLL_GAP_S)
        while True:
            lease = self.collection.find_one({"_id": TURN_ID}) or {}
            now = self.clock()
            watched_s += min(now - last_poll, MAX_POLL_GAP_S)
            last_poll = now
            if lease.get("holder") == token:  # our claim landed, its answer did not
                self._token, self._renewed_at = token, now
                self._leave_line(token)  # our entry, if a beat put it back meanwhile
                return
            head = self._first_live_waiter(lease.get("line") or [], waiters, watched_s)
            # None: no live waiter at all, ours included (passed for dead, not yet back): the turn is
            # still first come, first served among the live ones.
            first_in_line = head in (None, token)
            state = (lease.get("holder"), lease.get("renewals"))
            if holder is None or holder.value != state:
                holder = _Watched(state, watched_s)
            free = state[0] is None or watched_s - holder.since >= LEASE_S
            if free and first_in_line:
                claim = {"_id": TURN_ID, "holder": state[0], "renewals": state[1]}
                if self.collection.update_one(claim, {**taken, **_leaving(token)}).matched_count:
                    self._token, self._renewed_at = token, now
                    return
            elif on_wait is not None and not told:
                on_wait(
                    f"waiting for the store of {lease.get('file') or 'another file'} to finish (if it"
                    f" was stopped, its turn is taken over {LEASE_S / 60:.0f} minutes after its last sign"
                    " of life)"
                )
                told = True
            self._beat(token, file_name, key)
            self.sleep(POLL_S if first_in_line else WAITING_POLL_S)

    def _join_line(self, token: str, file_name: str, key: str) -> None:
        # One write: the place in line is taken and visible at once.
        # Its beat starts above its beats so far: a waiter passed for dead and back must not show a
        # beat that another waiter saw on its old entry (it would be taken for still standing).
        entry = {"token": token, "key": key, "run": self._run_id, "file": file_name, "beat": self._beats}
        self.collection.update_one({"_id": TURN_ID}, {"$push": {"line": entry}})

    def _leave_line(self, token: str) -> None:
        with contextlib.suppress(PyMongoError):  # an entry left behind is passed after WAITER_STALE_S
            self.collection.update_one({"_id": TURN_ID}, _leaving(token))

    def _beat(self, token: str, file_name: str, key: str) -> None:
        """A sign of life in line; a waiter that was passed for dead (it stood still, then came back)
        joins the end of the line again."""
        self._beats += 1
        beaten = self.collection.update_one(
            {"_id": TURN_ID, "line.token": token}, {"$inc": {"line.$.beat": 1}}
        )
        if not beaten.matched_count:
            self._join_line(token, file_name, key)

    def _first_live_waiter(self, line: list, watched: dict[str, _Watched], now: float) -> str | None:
        """The token of the first waiter still beating; one whose beat stood still for
        WAITER_STALE_S (of `now`, this waiter's watching time) is removed, only if its beat still
        stands: it may have come back."""
        for waiter in line:
            token, beat = waiter.get("token"), waiter.get("beat")
            seen = watched.get(token)
            if seen is None or seen.value != beat:
                watched[token] = _Watched(beat, now)
            elif now - seen.since >= WAITER_STALE_S:
                self.collection.update_one(
                    {"_id": TURN_ID}, {"$pull": {"line": {"token": token, "beat": beat}}}
                )
                del watched[token]
                continue
            return token
        return None

    def _give_up(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            self.collection.update_one(
                {"_id": TURN_ID, "holder": token},
                {"$set": {"holder": None, "key": None, "file": None}, "$inc": {"renewals": 1}},
            )

    def _ensure_document(self) -> None:
        # Another store may create it at the same moment.
        with contextlib.suppress(DuplicateKeyError):
            self.collection.update_one(
                {"_id": TURN_ID},
                {
                    "$setOnInsert": {
                        "holder": None,
                        "key": None,
                        "file": None,
                        "renewals": 0,
                        "line": [],
                    }
                },
                upsert=True,
            )


def _leaving(token: str) -> dict:
    return {"$pull": {"line": {"token": token}}}


def _taken(token: str, key: str, file_name: str) -> dict:
    return {
        "$set": {"holder": token, "key": key, "file": file_name},
        "$inc": {"renewals": 1},
    }
