"""The OpenMRS submission log: one document per record key in `openmrs_submissions`.

Document: `_id` (record key), `state`, `condition_uuid` (newest version in OpenMRS), `content_hash`
(last sent), `confirmed_hash` (what OpenMRS is known to hold), `server` (base URL, no credentials),
`attempts` (the last 20: at, method, status, message without identifiers), `first_attempt_at` (of
the content last marked: the patient retry window counts from it), `updated_at`, and for claimed
sends (REST corrections, every FHIR write) `claim`, `claimed_by`, `claimed_at`, and `busy_since`:
when the record was claimed, or its last write's answer was lost (none once an outcome is written
otherwise). Writes are bulk wherever a batch is at hand.
"""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pymongo import UpdateOne
from pymongo.database import Database

from tm2_pipeline.identity import condition_uuid
from tm2_pipeline.openmrs.states import (
    UNSETTLED_STATES,
    WAITING_STATES,
    Attempt,
    PendingSubmission,
    SubmissionEntry,
    SubmissionOutcome,
    SubmissionState,
)
from tm2_pipeline.store.errors import client_target, insert_new, translate_mongo_errors
from tm2_pipeline.store.indexes import SUBMISSIONS_COLLECTION
from tm2_pipeline.store.lookups import chunked, lookup_chunk_size
from tm2_pipeline.store.timestamps import stored_timestamp

KEEP_ATTEMPTS = 20
# How long a record claimed by a run is left to that run. Its requests, retries and backoff
# included, a record is in flight for minutes at most; a run that died holding claims leaves them to
# the nightly retry (or to any run after this long). A record whose last write is in doubt (sent,
# answer lost) is left alone as long: OpenMRS may still be writing it, and a look before it has
# landed would miss it and send a second copy (or a second version).
CLAIM_LEASE = timedelta(minutes=15)
_READ_CHUNK = 1000
# States no run is in the middle of (what a run that failed early may mark for the nightly retry).
_SETTLED = sorted(state.value for state in set(SubmissionState) - UNSETTLED_STATES)
_UNSENT_CHUNK = 5000

_Result = TypeVar("_Result")


def _translated(method: Callable[..., _Result]) -> Callable[..., _Result]:
    """Every call to the server behind this method reports pymongo's errors as `MongoUnavailable` /
    `MongoRefused`: a refused bulk write's text quotes its documents (keys, condition uuids)."""

    @functools.wraps(method)
    def translated(self: SubmissionLog, *args: Any, **kwargs: Any) -> _Result:
        with translate_mongo_errors(self.target):
            return method(self, *args, **kwargs)

    return translated


def _entry(document: dict) -> SubmissionEntry:
    return SubmissionEntry(
        key=document["_id"],
        state=SubmissionState(document["state"]),
        condition_uuid=document["condition_uuid"],
        content_hash=document.get("content_hash"),
        confirmed_hash=document.get("confirmed_hash"),
        server=document.get("server"),
        first_attempt_at=document.get("first_attempt_at"),
        updated_at=document.get("updated_at"),
        attempts=tuple(
            Attempt(at=a["at"], method=a["method"], status=a.get("status"), message=a.get("message", ""))
            for a in document.get("attempts") or []
        ),
        claim=document.get("claim"),
        api=document.get("api"),
    )


def _first_mark(at: datetime) -> dict:
    """The fields a log entry starts with (or starts again with, for another server)."""
    return {"confirmed_hash": None, "first_attempt_at": at, "attempts": []}


def _attempt_documents(attempts: Iterable[Attempt]) -> list[dict]:
    return [{**attempt.to_document(), "at": stored_timestamp(attempt.at)} for attempt in attempts]


class SubmissionLog:
    """Read and write the submission log (pymongo only; the Mongo resource hands in the database)."""

    def __init__(self, db: Database, *, target: str | None = None) -> None:
        self._db = db
        self.target = target or client_target(db.client)
        self._collection = db[SUBMISSIONS_COLLECTION]
        self._lookup_keys: int | None = None
        self.owner = uuid.uuid4().hex  # this run's name on the sends it claims

    def _key_chunks(self, keys: Sequence[str]) -> Iterator[list[str]]:
        if self._lookup_keys is None:
            self._lookup_keys = lookup_chunk_size(self._db, _READ_CHUNK)
        return chunked(keys, self._lookup_keys)

    @_translated
    def entries_for(self, keys: Sequence[str]) -> dict[str, SubmissionEntry]:
        entries: dict[str, SubmissionEntry] = {}
        for chunk in self._key_chunks(keys):
            for document in self._collection.find({"_id": {"$in": chunk}}):
                entries[document["_id"]] = _entry(document)
        return entries

    @_translated
    def mark_in_flight(self, pending: Sequence[PendingSubmission], server: str, now: datetime) -> set[str]:
        """Write-ahead: these records are about to be sent (state in_flight); returns the keys marked.

        Keys the log did not hold are inserted (on SecantusDB an insert costs a quarter of an upsert);
        one another run inserted meanwhile comes back as a duplicate key and is upserted instead
        (REST creates are safe to race: both runs use the record's own uuid, and OpenMRS keeps one).
        Claimed records (`PendingSubmission.claimed`) are claimed instead (`_claim`): one another run
        claimed since the batch was planned, or still holds, is not marked, and this run does not send it.
        """
        if not pending:
            return set()
        at = stored_timestamp(now)
        claimed = [item for item in pending if item.claimed]
        creates = [item for item in pending if not item.claimed]
        new = [item for item in creates if item.new]
        raced = self._insert_marks(new, server, at)
        operations = [self._mark(item, server, at) for item in creates if not item.new or item.key in raced]
        if operations:
            self._collection.bulk_write(operations, ordered=False)
        return {item.key for item in creates} | self._claim(claimed, server, at)

    def _claim(self, pending: Sequence[PendingSubmission], server: str, at: datetime) -> set[str]:
        """Mark each record only if its entry still holds the claim read at planning time and is not
        busy (`_claim_filters`). A key the log did not hold is inserted with the claim: if another run
        inserted it first, that run has it."""
        if not pending:
            return set()
        token, claim = self._new_claim()
        self._insert_marks([item for item in pending if item.new], server, at, claim)
        operations = []
        for item in pending:
            if item.new:
                continue
            fields = {**self._mark_fields(item, server, at), **claim}
            if item.fresh:  # what the log knew was about another server
                fields.update(_first_mark(at))
            # At most one of the two applies: the first to do so changes the claim the other needs.
            operations += [
                UpdateOne({"_id": item.key, **claimable}, {"$set": fields})
                for claimable in self._claim_filters(item.claim, claim["claimed_at"])
            ]
        if operations:
            self._collection.bulk_write(operations, ordered=False)
        return {
            document["_id"]
            for chunk in self._key_chunks([item.key for item in pending])
            for document in self._collection.find({"_id": {"$in": chunk}, "claim": token}, {"_id": 1})
        }

    @_translated
    def hold_claim(self, key: str, claim: str | None) -> bool:
        """Right before a claimed record is sent: renew this run's claim on `key`, or take it when the
        entry still holds `claim` (read when the record was planned) and is not busy. False: another
        run is sending it (or its last write is in doubt), so this run must not. Renewed whenever the
        last claim is older than the exchange's deadline (`record_exchange.hold`), it keeps a slow
        run's lease from running out between its mark and its post."""
        _, fields = self._new_claim()
        _, free = self._claim_filters(claim, fields["claimed_at"])
        for held in ({"claimed_by": self.owner}, free):
            if self._collection.update_one({"_id": key, **held}, {"$set": fields}).matched_count:
                return True
        return False

    def _new_claim(self) -> tuple[str, dict]:
        token = uuid.uuid4().hex
        wall = stored_timestamp(datetime.now(UTC))  # the lease is real time, whatever `now` the run uses
        return token, {"claim": token, "claimed_by": self.owner, "claimed_at": wall, "busy_since": wall}

    def _claim_filters(self, claim: str | None, wall: datetime) -> tuple[dict, dict]:
        """Two ways an entry that still holds the claim read at planning time may be claimed: this run
        holds it already, or it is not busy (claimed by a live run, or its write in doubt, within
        CLAIM_LEASE). Per-field conditions only: a top-level `$or` makes SecantusDB scan the whole
        collection for every update, instead of finding the key in the `_id` index."""
        mine = {"claim": claim, "claimed_by": self.owner}
        free = {"claim": claim, "busy_since": {"$not": {"$gte": wall - CLAIM_LEASE}}}
        return mine, free

    def _insert_marks(
        self, pending: Sequence[PendingSubmission], server: str, at: datetime, claim: dict | None = None
    ) -> set[str]:
        """Insert whole in_flight entries (with `claim`'s fields, if any); the keys that turned out to
        exist already."""
        documents = [
            {"_id": item.key, **self._mark_fields(item, server, at), **_first_mark(at), **(claim or {})}
            for item in pending
        ]
        return {document["_id"] for document in insert_new(self._collection, documents)}

    @staticmethod
    def _mark_fields(item: PendingSubmission, server: str, at: datetime) -> dict:
        fields = {
            "state": SubmissionState.IN_FLIGHT.value,
            "condition_uuid": item.condition_uuid,
            "content_hash": item.content_hash,
            "server": server,
            "api": item.api,
            "updated_at": at,
        }
        if item.changed:  # new content: its patient / concept retry window starts now
            fields["first_attempt_at"] = at
        return fields

    def _mark(self, item: PendingSubmission, server: str, at: datetime) -> UpdateOne:
        fields = self._mark_fields(item, server, at)
        if item.fresh:  # what the log knew was about another server
            return UpdateOne({"_id": item.key}, {"$set": {**fields, **_first_mark(at)}}, upsert=True)
        on_insert = {name: value for name, value in _first_mark(at).items() if name not in fields}
        return UpdateOne({"_id": item.key}, {"$set": fields, "$setOnInsert": on_insert}, upsert=True)

    @_translated
    def record_outcomes(self, outcomes: Sequence[SubmissionOutcome], now: datetime) -> None:
        """The end of each record's submission in this run, one bulk write; attempts keep the last 20."""
        if not outcomes:
            return
        at = stored_timestamp(now)
        operations = []
        for outcome in outcomes:
            fields: dict = {
                "state": outcome.state.value,
                "condition_uuid": outcome.condition_uuid,
                "updated_at": at,
            }
            if outcome.in_doubt:
                # Busy for every run now, this one included (real time, as the claims', whatever
                # `now` the run uses), whoever held the claim: OpenMRS may still be writing it.
                fields.update(busy_since=stored_timestamp(datetime.now(UTC)), claimed_by=None)
            elif outcome.held_claim:
                # Released only while this run still holds it: a run whose lease ran out, or a run
                # that sent without a claim, must not free the claim of a run sending it now.
                release = {"$set": {"busy_since": None}}
                operations.append(UpdateOne({"_id": outcome.key, "claimed_by": self.owner}, release))
            if outcome.confirmed_hash is not None:
                fields["confirmed_hash"] = outcome.confirmed_hash
            update: dict = {"$set": fields}
            if outcome.attempts:
                attempts = _attempt_documents(outcome.attempts)
                update["$push"] = {"attempts": {"$each": attempts, "$slice": -KEEP_ATTEMPTS}}
            operations.append(UpdateOne({"_id": outcome.key}, update))
        self._collection.bulk_write(operations, ordered=False)

    @_translated
    def send_again(self, sent: Sequence[tuple[str, str]], attempt: Attempt, now: datetime) -> None:
        """Records whose stored content changed while this run sent an older copy (key, content hash
        sent): `failed_retryable`, so that a later run sends the newer content. Not an entry another
        run has marked since with other content: that run is sending it, and its outcome stands."""
        if not sent:
            return
        update = {
            "$set": {"state": SubmissionState.FAILED_RETRYABLE.value, "updated_at": stored_timestamp(now)},
            "$push": {"attempts": {"$each": _attempt_documents([attempt]), "$slice": -KEEP_ATTEMPTS}},
        }
        operations = [UpdateOne({"_id": key, "content_hash": content}, update) for key, content in sent]
        self._collection.bulk_write(operations, ordered=False)

    def record_outcome(
        self,
        key: str,
        state: SubmissionState,
        attempts: Sequence[Attempt],
        *,
        condition_uuid: str,
        now: datetime,
        confirmed_hash: str | None = None,
    ) -> None:
        self.record_outcomes(
            [SubmissionOutcome(key, state, condition_uuid, tuple(attempts), confirmed_hash=confirmed_hash)],
            now,
        )

    @_translated
    def mark_unsent(
        self,
        keys: Sequence[str],
        server: str,
        message: str,
        now: datetime,
        stored_hashes: Callable[[Sequence[str]], Mapping[str, str]] | None = None,
    ) -> int:
        """A run that failed before these keys were marked (OpenMRS unreachable at login, refused
        credentials): keys the log does not hold yet get a `failed_retryable` entry, so the nightly
        retry sends them even if the file is never ingested again. Their uuid is the one a create
        uses, and a retry looks in OpenMRS before it sends. So do entries of another server that no
        run is sending (OPENMRS_BASE_URL changed: nothing is known of this one yet), started afresh
        for this one, and entries of this server that no run is sending and whose content differs
        from the store's (`stored_hashes`: the store's content hash of some keys): a correction the
        run never reached, which the nightly retry would skip. Other entries are left alone; returns
        how many were added or changed."""
        at = stored_timestamp(now)
        attempt = {"at": at, "method": "-", "status": None, "message": message}
        added = 0
        for start in range(0, len(keys), _UNSENT_CHUNK):
            chunk = keys[start : start + _UNSENT_CHUNK]
            documents = [
                {
                    "_id": key,
                    "state": SubmissionState.FAILED_RETRYABLE.value,
                    "condition_uuid": condition_uuid(key),
                    "content_hash": None,
                    "server": server,
                    "updated_at": at,
                    **_first_mark(at),
                    "attempts": [attempt],
                }
                for key in chunk
            ]
            added += len(documents) - len(insert_new(self._collection, documents))
            added += self._restart_for_server(chunk, server, attempt, at)
            if stored_hashes is not None:
                added += self._mark_changed_unsent(chunk, stored_hashes, server, attempt, at)
        return added

    def _restart_for_server(self, keys: Sequence[str], server: str, attempt: dict, at: datetime) -> int:
        """Entries of another server no run is sending (settled, no live claim): `failed_retryable`
        for this one, afresh (the uuid a create uses, nothing confirmed), as a run reaching this
        server would mark them."""
        # Nor one a run holds a live claim on (its lease not run out): that run may be sending it.
        free = {"$not": {"$gte": stored_timestamp(datetime.now(UTC) - CLAIM_LEASE)}}
        elsewhere = {"server": {"$ne": server}, "state": {"$in": _SETTLED}, "busy_since": free}
        found = [
            document["_id"]
            for chunk in self._key_chunks(keys)
            for document in self._collection.find({"_id": {"$in": chunk}, **elsewhere}, {"_id": 1})
        ]
        operations = [
            UpdateOne(
                {"_id": key, **elsewhere},  # unless a run has marked it since
                {
                    "$set": {
                        "state": SubmissionState.FAILED_RETRYABLE.value,
                        "condition_uuid": condition_uuid(key),
                        "content_hash": None,
                        "server": server,
                        "api": None,
                        "updated_at": at,
                        **_first_mark(at),
                        "attempts": [attempt],
                    }
                },
            )
            for key in found
        ]
        return self._collection.bulk_write(operations, ordered=False).modified_count if operations else 0

    def _mark_changed_unsent(
        self,
        keys: Sequence[str],
        stored_hashes: Callable[[Sequence[str]], Mapping[str, str]],
        server: str,
        attempt: dict,
        at: datetime,
    ) -> int:
        """Entries of `server` no run is sending whose content differs from the store's: retryable."""
        marked = {
            document["_id"]: document.get("content_hash")
            for chunk in self._key_chunks(keys)
            for document in self._collection.find(
                {"_id": {"$in": chunk}, "server": server, "state": {"$in": _SETTLED}}, {"content_hash": 1}
            )
        }
        stored = stored_hashes(list(marked)) if marked else {}
        update = {
            "$set": {"state": SubmissionState.FAILED_RETRYABLE.value, "updated_at": at},
            "$push": {"attempts": {"$each": [attempt], "$slice": -KEEP_ATTEMPTS}},
        }
        operations = [
            # Unless another run has marked it since (then it is that run's).
            UpdateOne({"_id": key, "state": {"$in": _SETTLED}, "content_hash": marked[key]}, update)
            for key, content in stored.items()
            if marked.get(key) != content
        ]
        return self._collection.bulk_write(operations, ordered=False).modified_count if operations else 0

    @_translated
    def rebase(self, key: str, condition_uuid: str, now: datetime) -> None:
        """A newer version was found in OpenMRS: remember it before anything replaces it."""
        self._collection.update_one(
            {"_id": key}, {"$set": {"condition_uuid": condition_uuid, "updated_at": stored_timestamp(now)}}
        )

    @_translated
    def state_counts(self, keys: Sequence[str] | None = None) -> dict[str, int]:
        matches = [{}] if keys is None else [{"_id": {"$in": chunk}} for chunk in self._key_chunks(keys)]
        counts: Counter[str] = Counter()
        for match in matches:
            pipeline = [{"$match": match}, {"$group": {"_id": "$state", "count": {"$sum": 1}}}]
            counts.update({row["_id"]: row["count"] for row in self._collection.aggregate(pipeline)})
        return dict(counts)

    def entries_in(self, states: Iterable[SubmissionState]) -> Iterator[SubmissionEntry]:
        """Entries in these states, by state then oldest change first (streamed: there may be many)."""
        query = {"state": {"$in": sorted(state.value for state in states)}}
        with translate_mongo_errors(self.target):  # around the iteration: the cursor reads in batches
            for document in self._collection.find(query).sort([("state", 1), ("updated_at", 1)]):
                yield _entry(document)

    @_translated
    def release(self, states: Iterable[SubmissionState], message: str, now: datetime) -> int:
        """A person fixed the cause (merged a patient, mapped a concept, granted a privilege): entries
        in these states become `failed_retryable`, so the next retry looks the record up in OpenMRS
        and sends it if absent; the patient retry window starts again. Returns how many changed."""
        at = stored_timestamp(now)
        attempt = {"at": at, "method": "-", "status": None, "message": message}
        result = self._collection.update_many(
            {"state": {"$in": sorted(state.value for state in states)}},
            {
                "$set": {
                    "state": SubmissionState.FAILED_RETRYABLE.value,
                    "updated_at": at,
                    "first_attempt_at": at,
                },
                "$push": {"attempts": {"$each": [attempt], "$slice": -KEEP_ATTEMPTS}},
            },
        )
        return result.modified_count

    @_translated
    def retryable_keys(self, now: datetime, patient_retry_days: int) -> list[str]:
        """Keys a later run should submit again: unsettled ones, and waiting ones still inside the window."""
        since = stored_timestamp(now - timedelta(days=patient_retry_days))
        query = {
            "$or": [
                {"state": {"$in": sorted(state.value for state in UNSETTLED_STATES)}},
                {
                    "state": {"$in": sorted(state.value for state in WAITING_STATES)},
                    "first_attempt_at": {"$gte": since},
                },
            ]
        }
        return [document["_id"] for document in self._collection.find(query, {"_id": 1}).sort("_id", 1)]
