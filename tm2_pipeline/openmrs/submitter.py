"""Exactly-once submission of stored TM2 records as OpenMRS Conditions.

Per batch: decide from the log (decisions.py), mark what will be sent in_flight in one bulk write
(write-ahead), send concurrently, write the outcomes in one bulk write. Anything sent before, including
by an earlier attempt of this run, is looked up in OpenMRS before it is sent again; creations carry the
record's own uuid, so OpenMRS itself refuses a second copy. Batches form a sliding window: the next
one is marked and launched while earlier ones still send, outcomes are written as records finish, and
the log's blocking calls run in a thread, so the client's request slots stay busy. A run-level failure
(credentials, privileges) cancels what has not finished; that stays in_flight, and the outcomes of the
finished records are still written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from tm2_pipeline.openmrs.client import OpenMRSClient, Sleep
from tm2_pipeline.openmrs.client_config import ClientConfig
from tm2_pipeline.openmrs.decisions import Action, Plan, plan_submission
from tm2_pipeline.openmrs.errors import OpenMRSError, OpenMRSNotRetryable, TransientOpenMRSError
from tm2_pipeline.openmrs.interrupts import stopped_by_interrupts
from tm2_pipeline.openmrs.payloads import (
    condition_matches,
    condition_payload,
    correction_payload,
)
from tm2_pipeline.openmrs.responses import WriteResult, is_duplicate_error, sanitize
from tm2_pipeline.openmrs.states import (
    Attempt,
    PendingSubmission,
    SubmissionEntry,
    SubmissionOutcome,
    SubmissionState,
    SubmissionSummary,
)
from tm2_pipeline.openmrs.versions import latest_version

Record = Mapping[str, Any]
_Task = asyncio.Task[SubmissionOutcome]


class SubmissionLogLike(Protocol):
    def entries_for(self, keys: Sequence[str]) -> dict[str, SubmissionEntry]: ...
    def mark_in_flight(
        self, pending: Sequence[PendingSubmission], server: str, now: datetime
    ) -> set[str]: ...
    def record_outcomes(self, outcomes: Sequence[SubmissionOutcome], now: datetime) -> None: ...
    def rebase(self, key: str, condition_uuid: str, now: datetime) -> None: ...
    def hold_claim(self, key: str, claim: str | None) -> bool: ...


class StoredRecords(Protocol):
    """The record store, read again just before records are planned (`RecordStore`)."""

    def content_hashes(self, keys: Sequence[str]) -> dict[str, str]: ...
    def find_by_keys(self, keys: Iterable[str]) -> list[dict[str, Any]]: ...


_CORRECTIONS = (Action.CORRECT, Action.VERIFY_CORRECT)


@dataclass(frozen=True)
class SubmitterOptions:
    allow_noncoded: bool = True
    patient_retry_days: int = 30
    batch_size: int = 200


@dataclass
class _Work:
    """One record's submission in progress."""

    record: Record
    plan: Plan
    current_uuid: str
    claim: str | None = None  # the log entry's claim when the record was planned
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.plan.key

    def outcome(
        self,
        state: SubmissionState,
        *,
        uuid: str | None = None,
        confirmed: bool = False,
        created: bool = False,
        corrected: bool = False,
        left_to_other_run: bool = False,
    ) -> SubmissionOutcome:
        return SubmissionOutcome(
            key=self.key,
            state=state,
            condition_uuid=uuid or self.current_uuid,
            attempts=tuple(self.attempts),
            confirmed_hash=self.plan.content_hash if confirmed else None,
            created=created,
            corrected=corrected,
            left_to_other_run=left_to_other_run,
        )


class _Submitter:
    def __init__(
        self,
        client: OpenMRSClient,
        log: SubmissionLogLike,
        now: datetime,
        options: SubmitterOptions,
        clock: Callable[[], datetime],
        store: StoredRecords | None = None,
    ) -> None:
        self.client, self.log, self.now, self.options, self.clock = client, log, now, options, clock
        self.store = store
        self.live: set[_Task] = set()  # launched, not finished
        self.finished: list[SubmissionOutcome] = []  # outcomes not written to the log yet
        self.progress = asyncio.Event()  # set whenever a task ends
        self.failure: BaseException | None = None  # the first run-level failure, raised at the end

    def note(self, work: _Work, method: str, status: int | None, message: str) -> None:
        text = sanitize(message, secrets=(str(work.record.get("patient_id") or ""),))
        work.attempts.append(Attempt(at=self.clock(), method=method, status=status, message=text))

    async def run(self, chunks: Sequence[Sequence[Record]], summary: SubmissionSummary) -> None:
        """A sliding window over the chunks, driven by one log call at a time (each in a thread, so the
        requests keep going meanwhile): the next chunk's write-ahead whenever fewer than a chunk of
        records is still unfinished, so the client's slots never drain, else the outcomes of whatever
        finished since the last write. Keys are distinct across chunks, and a record's outcome is only
        written once its task has ended, so no log write can overtake another for the same key."""
        upcoming = list(reversed(chunks))
        while True:
            if upcoming and self.failure is None and len(self.live) < self.options.batch_size:
                works = await self.prepare(upcoming.pop(), summary)
                if self.failure is None:  # a failure while it was marked: it stays in_flight, unsent
                    self.launch(works)
            elif self.finished:
                outcomes, self.finished = self.finished, []
                owned = [outcome for outcome in outcomes if not outcome.left_to_other_run]
                await asyncio.to_thread(self.log.record_outcomes, owned, self.now)
                for outcome in outcomes:
                    summary.add(outcome.state)
                    summary.submitted += outcome.created
                    summary.corrected += outcome.corrected
            elif self.live:
                self.progress.clear()
                await self.progress.wait()
            else:
                return

    async def prepare(self, records: Sequence[Record], summary: SubmissionSummary) -> list[_Work]:
        """Plan a chunk from the log and write its write-ahead mark; returns what must be sent."""
        if self.store is not None:
            records = await asyncio.to_thread(self.current, records)
        entries = await asyncio.to_thread(self.log.entries_for, [record["_id"] for record in records])
        works: list[_Work] = []
        for record in records:
            entry = entries.get(record["_id"])
            plan = plan_submission(
                record["_id"],
                record["content_hash"],
                entry,
                server=self.client.server,
                now=self.now,
                patient_retry_days=self.options.patient_retry_days,
            )
            if plan.sends:
                works.append(_Work(record, plan, plan.condition_uuid, entry.claim if entry else None))
            else:
                summary.unchanged += 1
                summary.add(entry.state if entry else SubmissionState.SUBMITTED)
        if works:
            await self.client.ensure_session()  # before the write-ahead: a refused login marks nothing
            pending = [
                PendingSubmission(
                    w.key,
                    w.plan.condition_uuid,
                    w.plan.content_hash,
                    w.plan.fresh,
                    new=w.key not in entries,
                    correction=w.plan.action in _CORRECTIONS,
                    claim=entries[w.key].claim if w.key in entries else None,
                    changed=w.key in entries and entries[w.key].content_hash != w.plan.content_hash,
                )
                for w in works
            ]
            # Awaited before the chunk's tasks exist: no request can precede its record's mark.
            marked = await asyncio.to_thread(self.log.mark_in_flight, pending, self.client.server, self.now)
            for work in works:
                if work.key not in marked:  # another run is correcting it: that run's to finish
                    summary.add(SubmissionState.IN_FLIGHT)
            works = [work for work in works if work.key in marked]
        return works

    def current(self, records: Sequence[Record]) -> Sequence[Record]:
        """The store's content now. The batch was read a while ago: another file may have stored newer
        content for a key since, and been sent; planning the older copy would put it back in OpenMRS."""
        assert self.store is not None
        hashes = self.store.content_hashes([record["_id"] for record in records])
        stale = [r["_id"] for r in records if hashes.get(r["_id"], r["content_hash"]) != r["content_hash"]]
        if not stale:
            return records
        fresh = {document["_id"]: document for document in self.store.find_by_keys(stale)}
        return [fresh.get(record["_id"], record) for record in records]

    def launch(self, works: Sequence[_Work]) -> None:
        """Start sending; the client's semaphore keeps at most C requests in flight."""
        for work in works:
            task = asyncio.create_task(self.submit_one(work))
            self.live.add(task)
            task.add_done_callback(self._ended)

    def _ended(self, task: _Task) -> None:
        self.live.discard(task)
        self.progress.set()
        if task.cancelled():
            return
        if task.exception() is not None:
            self.stop(task.exception())
        else:
            self.finished.append(task.result())

    def stop(self, failure: BaseException | None) -> None:
        """A run-level failure (credentials, privileges): send nothing more. What has not finished stays
        in_flight, which the next run verifies before it sends it again."""
        if self.failure is None:
            self.failure = failure
        for task in self.live:
            task.cancel()

    async def submit_one(self, work: _Work) -> SubmissionOutcome:
        try:
            async for attempt in self.client.retrying():
                with attempt:
                    return await self.attempt(work, attempt.retry_state.attempt_number)
        except TransientOpenMRSError:
            return work.outcome(SubmissionState.FAILED_RETRYABLE)
        except OpenMRSNotRetryable:
            raise  # the whole run stops (credentials, privileges)
        except OpenMRSError as error:
            self.note(work, "GET", None, str(error))
            return work.outcome(SubmissionState.REJECTED_BY_SERVER)
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def attempt(self, work: _Work, number: int) -> SubmissionOutcome:
        try:
            return await self.attempt_unchecked(work, number)
        except TransientOpenMRSError as error:
            self.note(work, error.method, error.status, str(error))
            raise

    async def attempt_unchecked(self, work: _Work, number: int) -> SubmissionOutcome:
        record = work.record
        patients = await self.client.patient_uuids(record["patient_id"])
        if len(patients) != 1:
            state = SubmissionState.PATIENT_NOT_FOUND if not patients else SubmissionState.AMBIGUOUS_PATIENT
            self.note(work, "GET", 200, f"{len(patients)} patients carry this identifier")
            return work.outcome(state)
        patient_uuid = patients[0]
        concept = None
        if await self.client.concept_source_exists():
            concept = await self.client.concept_uuid(record["tm2_code"])
        if concept is None and not self.options.allow_noncoded:
            self.note(work, "GET", 200, f"no concept maps {record['tm2_code']} in the concept source")
            return work.outcome(SubmissionState.CONCEPT_NOT_FOUND)
        payload = condition_payload(
            record, condition_uuid=work.plan.condition_uuid, patient_uuid=patient_uuid, concept_uuid=concept
        )
        action, retried = work.plan.action, number > 1
        if action is Action.CREATE and not retried:
            return await self.create(work, payload)
        if action is Action.CORRECT and not retried:
            return await self.correct(work, work.current_uuid, payload)
        if action in (Action.CREATE, Action.VERIFY_CREATE):
            existing = await self.client.get_condition(work.current_uuid)
            if existing is None:
                self.note(work, "GET", 404, "not in OpenMRS yet")
                return await self.create(work, payload)
            return await self.settle(work, existing, payload, patient_uuid)
        latest = await latest_version(self.client, patient_uuid, work.current_uuid)
        if latest is None:
            latest = await self.client.get_condition(work.current_uuid)
        if latest is None:
            self.note(work, "GET", 404, "the condition this record updates is no longer in OpenMRS")
            return work.outcome(SubmissionState.REJECTED_BY_SERVER)
        return await self.settle(work, latest, payload, patient_uuid)

    async def settle(
        self, work: _Work, found: dict[str, Any], payload: dict[str, Any], patient_uuid: str
    ) -> SubmissionOutcome:
        """OpenMRS has a version of this record: done if it matches, else send a new version of it."""
        if found.get("voided"):
            newer = await latest_version(self.client, patient_uuid, found["uuid"])
            if newer is None or newer.get("voided"):
                self.note(work, "GET", 200, "voided in OpenMRS; not sent again")
                return work.outcome(SubmissionState.REJECTED_BY_SERVER)
            found = newer
        if condition_matches(found, payload):
            self.note(work, "GET", 200, "already present")
            return work.outcome(SubmissionState.ALREADY_PRESENT, uuid=found["uuid"], confirmed=True)
        if not await self.hold(work):
            return work.outcome(SubmissionState.IN_FLIGHT, left_to_other_run=True)
        if found["uuid"] != work.current_uuid:
            # Write down the newest version before replacing it: a crash now must not lose its uuid.
            await asyncio.to_thread(self.log.rebase, work.key, found["uuid"], self.now)
            work.current_uuid = found["uuid"]
        return await self.correct(work, found["uuid"], payload)

    async def create(self, work: _Work, payload: dict[str, Any]) -> SubmissionOutcome:
        result = await self.client.create_condition(payload)
        if result.ok:
            self.note(work, "POST", result.status, "created")
            return work.outcome(SubmissionState.SUBMITTED, confirmed=True, created=True)
        self.note(work, "POST", result.status, result.message)
        # OpenMRS answers a uuid it already holds with a 500; behind some gateways or versions it is a
        # 409 or a 400 naming the duplicate. Any of them: look before calling it refused.
        if result.status >= 500 or result.status == 409 or is_duplicate_error(result.message):
            existing = await self.client.get_condition(work.current_uuid)
            if existing is not None:
                return await self.settle(work, existing, payload, payload["patient"])
            if result.status >= 500:
                duplicate = is_duplicate_error(result.message)
                reason = "duplicate reported but absent" if duplicate else "not written"
                raise TransientOpenMRSError(
                    f"condition create: {result.status}, {reason}", method="POST", status=result.status
                )
        return work.outcome(SubmissionState.REJECTED_BY_SERVER)

    async def hold(self, work: _Work) -> bool:
        """Whether this run may post a new version of the record now: a correction has no uuid of its
        own, so two runs posting one would fork the condition. Asked before every post, whatever the
        plan was (a record planned as a create can meet another run's version with other content)."""
        return await asyncio.to_thread(self.log.hold_claim, work.key, work.claim)

    async def correct(self, work: _Work, uuid: str, payload: dict[str, Any]) -> SubmissionOutcome:
        if not await self.hold(work):
            return work.outcome(SubmissionState.IN_FLIGHT, left_to_other_run=True)
        try:
            result: WriteResult = await self.client.update_condition(uuid, correction_payload(payload))
        except TransientOpenMRSError as error:
            if not error.in_doubt:
                raise
            # OpenMRS may still be writing this version: a look now could miss it and post a second
            # one (a fork). The next run looks, once it has landed.
            self.note(work, "POST", error.status, f"{error}; checked by the next run before anything is sent")
            return work.outcome(SubmissionState.FAILED_RETRYABLE)
        if result.ok and result.body and result.body.get("uuid"):
            if result.body.get("voided"):
                # OpenMRS returns a voided version unchanged: another run replaced it first.
                self.note(work, "POST", result.status, "that version was already replaced")
                return await self.settle(work, result.body, payload, payload["patient"])
            new_uuid = result.body["uuid"]
            changed = new_uuid != uuid
            self.note(work, "POST", result.status, "new version" if changed else "unchanged")
            return work.outcome(
                SubmissionState.SUBMITTED, uuid=new_uuid, confirmed=True, created=changed, corrected=changed
            )
        self.note(work, "POST", result.status, result.message)
        if result.status >= 500 or result.ok:
            # Whether a version was written is unknown: the next attempt looks before it sends.
            raise TransientOpenMRSError(
                f"condition update: {result.status}", method="POST", status=result.status
            )
        return work.outcome(SubmissionState.REJECTED_BY_SERVER)


def _unique_by_key(records: Sequence[Record]) -> list[Record]:
    """One record per key (the last wins): two tasks must never submit the same key at once."""
    return list({record["_id"]: record for record in records}.values())


async def submit_records(
    records: Sequence[Record],
    *,
    client: OpenMRSClient,
    log: SubmissionLogLike,
    now: datetime,
    options: SubmitterOptions | None = None,
    clock: Callable[[], datetime] | None = None,
    store: StoredRecords | None = None,
) -> SubmissionSummary:
    """Submit every record that OpenMRS does not hold yet (or holds with other content); see module doc.
    With `store`, each chunk is planned from the store's content at that moment (`_Submitter.current`)."""
    options = options or SubmitterOptions()
    submitter = _Submitter(client, log, now, options, clock or (lambda: datetime.now(UTC)), store)
    summary = SubmissionSummary()
    unique = _unique_by_key(records)
    try:
        await submitter.run(
            [unique[i : i + options.batch_size] for i in range(0, len(unique), options.batch_size)], summary
        )
    except BaseException as error:
        # The log failed: what was launched is marked in_flight, so let its requests end rather than
        # cut them off at an unknown point (unless this run is itself being cancelled).
        if isinstance(error, asyncio.CancelledError):
            submitter.stop(None)
        if submitter.live:
            await asyncio.wait(submitter.live)
        raise
    finally:
        summary.requests = dict(client.requests)
    if submitter.failure is not None:
        raise submitter.failure
    return summary


def run_submission(
    batches: Iterable[Sequence[Record]],
    *,
    config: ClientConfig,
    log: SubmissionLogLike,
    now: datetime,
    options: SubmitterOptions | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Sleep = asyncio.sleep,
    store: StoredRecords | None = None,
) -> SubmissionSummary:
    """Synchronous entry point (the Dagster resource calls this): one event loop, one login.

    `batches` may be produced lazily (read from the store as they are needed): each is submitted
    whole before the next is taken, so only one batch of records is in memory at a time. Keys must
    be distinct across batches.
    """

    async def main() -> SubmissionSummary:
        async with OpenMRSClient(config, transport=transport, sleep=sleep) as client:
            summary = SubmissionSummary()
            for records in batches:
                summary.merge(
                    await submit_records(
                        records, client=client, log=log, now=now, options=options, store=store
                    )
                )
            summary.requests = dict(client.requests)
            await client.logout()
            return summary

    return asyncio.run(stopped_by_interrupts(main()))
