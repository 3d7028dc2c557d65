"""Exactly-once submission of stored TM2 records as OpenMRS Conditions: the window over many records.

Per batch: decide from the log (decisions.py), mark what will be sent in_flight in one bulk write
(write-ahead), send concurrently (each record's exchange is record_exchange.py's), write the outcomes
in one bulk write. Batches form a sliding window: the next one is marked and launched while earlier
ones still send, outcomes are written as records finish, and the log's blocking calls run in a
thread, so the client's request slots stay busy. A run-level failure (credentials, privileges)
cancels what has not finished; that stays in_flight, and the outcomes of the finished records are
still written. Written outcomes are checked against the store (store_check.py), a batch at a time,
or at once for a claimed record: records whose content was stored anew while an older copy was sent
are planned again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from tm2_pipeline.openmrs.client import OpenMRSClient, Sleep
from tm2_pipeline.openmrs.client_config import FHIR, REST, ClientConfig
from tm2_pipeline.openmrs.decisions import plan_submission
from tm2_pipeline.openmrs.fhir_exchange import FhirRecordExchange
from tm2_pipeline.openmrs.interrupts import stopped_by_interrupts
from tm2_pipeline.openmrs.record_exchange import Record, RecordExchange, SubmissionLogLike, Work
from tm2_pipeline.openmrs.rest_exchange import RestRecordExchange
from tm2_pipeline.openmrs.states import (
    UNSETTLED_STATES,
    PendingSubmission,
    SubmissionEntry,
    SubmissionOutcome,
    SubmissionState,
    SubmissionSummary,
)
from tm2_pipeline.openmrs.store_check import StoreCheck, StoredRecords

_Task = asyncio.Task[SubmissionOutcome]


@dataclass(frozen=True)
class SubmitterOptions:
    allow_noncoded: bool = True
    patient_retry_days: int = 30
    batch_size: int = 200


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
        self.client, self.log, self.now, self.options = client, log, now, options
        self.store = StoreCheck(store, log, now, clock) if store is not None else None
        shared: dict[str, Any] = {
            "allow_noncoded": options.allow_noncoded,
            "stored_hash": self.store.stored_hash if self.store is not None else None,
        }
        self.exchanges: dict[str, RecordExchange] = {
            REST: RestRecordExchange(client, log, now, clock, **shared),
            FHIR: FhirRecordExchange(client, log, now, clock, **shared),
        }
        self.replanning: set[str] = set()  # keys to plan again (`StoreCheck.overtaken`), not planned yet
        self.written: list[SubmissionOutcome] = []  # outcomes in the log, not checked against the store
        self.live: set[_Task] = set()  # launched, not finished
        self.finished: list[SubmissionOutcome] = []  # outcomes not written to the log yet
        self.progress = asyncio.Event()  # set whenever a task ends
        self.failure: BaseException | None = None  # the first run-level failure, raised at the end

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
                    summary.submitted += outcome.created
                    summary.corrected += outcome.corrected
                    if outcome.left_to_other_run:
                        summary.add(outcome.state)
                self.written += owned
                # A claimed record at once: another run may have left it to this one (refused by the
                # claim), and a crash before the check would leave its newer content unsent.
                if len(self.written) >= self.options.batch_size or any(o.held_claim for o in owned):
                    upcoming += await self.check_store(summary)
            elif self.live:
                self.progress.clear()
                await self.progress.wait()
            elif self.written:
                upcoming += await self.check_store(summary)
            else:
                # Planned again but stopped before (a run-level failure): failed_retryable in the log.
                for _ in self.replanning:
                    summary.add(SubmissionState.FAILED_RETRYABLE)
                return

    async def check_store(self, summary: SubmissionSummary) -> list[list[Record]]:
        """The written outcomes checked against the store (`overtaken`, one query) and counted: a batch
        at a time, or at once when one was claimed; returns the chunk to plan again, if any."""
        written = self.written
        again: list[Record] = []
        later: set[str] = set()
        if self.store is not None:
            again, later = await asyncio.to_thread(self.store.overtaken, written)
        self.written = []  # only once checked: a failed check is left to `leave_unchecked`
        self.replanning.update(record["_id"] for record in again)
        for outcome in written:
            if outcome.key in later:
                summary.add(SubmissionState.FAILED_RETRYABLE)
            elif outcome.key not in self.replanning:  # else counted when its next plan ends
                summary.add(outcome.state)
        return [again] if again else []

    def leave_unchecked(self) -> None:
        """A run stopping early (interrupted, the log failing): outcomes not yet checked against the
        store are checked now, and records stored anew meanwhile left to the nightly retry."""
        written, self.written = self.written, []
        if self.store is not None:
            self.store.leave_unchecked(written)

    async def prepare(self, records: Sequence[Record], summary: SubmissionSummary) -> list[Work]:
        """Plan a chunk from the log and write its write-ahead mark; returns what must be sent."""
        self.replanning.difference_update(record["_id"] for record in records)
        if self.store is not None:
            records = await asyncio.to_thread(self.store.current, records)
        entries = await asyncio.to_thread(self.log.entries_for, [record["_id"] for record in records])
        works: list[Work] = []
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
                claim = entry.claim if entry else None
                works.append(Work(record, plan, plan.condition_uuid, claim, api=self.api_for(entry)))
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
                    claimed=w.plan.corrects or self.exchanges[w.api].claims_every_send,
                    claim=entries[w.key].claim if w.key in entries else None,
                    changed=w.key in entries and entries[w.key].content_hash != w.plan.content_hash,
                    api=w.api,
                )
                for w in works
            ]
            # Awaited before the chunk's tasks exist: no request can precede its record's mark.
            marking = time.time()  # no later than the claims the mark takes (wall time, as the lease)
            marked = await asyncio.to_thread(self.log.mark_in_flight, pending, self.client.server, self.now)
            for work, item in zip(works, pending, strict=True):
                if work.key not in marked:  # another run claimed it: that run's to finish
                    summary.add(SubmissionState.IN_FLIGHT)
                elif item.claimed:
                    work.claimed_at = marking
            works = [work for work in works if work.key in marked]
        return works

    def api_for(self, entry: SubmissionEntry | None) -> str:
        """The configured API, except for a record whose last send through the other one has not
        settled: it is finished as it began. A FHIR create in doubt, looked for over REST (by the
        record's uuid, which FHIR2 did not keep), would be sent again as a second condition."""
        configured = self.client.config.api
        if (
            entry is not None
            and entry.api in (REST, FHIR)
            and entry.api != configured
            and entry.state in UNSETTLED_STATES
            and entry.server == self.client.server
        ):
            return entry.api
        return configured

    def launch(self, works: Sequence[Work]) -> None:
        """Start sending; the client's semaphore keeps at most C requests in flight."""
        for work in works:
            task = asyncio.create_task(self.exchanges[work.api].submit_one(work))
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
        with contextlib.suppress(Exception):  # best effort: the log or the store may be what failed
            await asyncio.to_thread(submitter.leave_unchecked)
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
