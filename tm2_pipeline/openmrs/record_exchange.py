"""What every record's exchange with OpenMRS shares, whichever API writes the condition: the work in
progress (`Work`), the retry loop, the patient and concept lookups, the attempts noted for the log,
and the log's claim (`hold`). How a condition is looked for and written is the API's:
rest_exchange.py (the default) and fhir_exchange.py. The sliding window over many records is
submitter.py's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from tm2_pipeline.openmrs.client import OpenMRSClient
from tm2_pipeline.openmrs.decisions import Plan
from tm2_pipeline.openmrs.errors import (
    ClaimLapsed,
    OpenMRSError,
    OpenMRSNotRetryable,
    TransientOpenMRSError,
)
from tm2_pipeline.openmrs.responses import WriteResult, sanitize
from tm2_pipeline.openmrs.states import (
    Attempt,
    PendingSubmission,
    SubmissionEntry,
    SubmissionOutcome,
    SubmissionState,
)

Record = Mapping[str, Any]
# The store's content hash of a record now (None: not stored), read right before a correction.
StoredHash = Callable[[str], "str | None"]
IN_DOUBT_NOTE = "left alone for a while, then looked for in OpenMRS before anything is sent"
# A claimed write still waiting for a request slot this long after its claim was taken is not sent
# (`ClaimLapsed`): the claim is taken again first. Well inside the log's 15-minute lease, so no other
# run can have taken the record over meanwhile.
HELD_SEND_DEADLINE_S = 300.0
_Sent = TypeVar("_Sent")


class SubmissionLogLike(Protocol):
    def entries_for(self, keys: Sequence[str]) -> dict[str, SubmissionEntry]: ...
    def mark_in_flight(
        self, pending: Sequence[PendingSubmission], server: str, now: datetime
    ) -> set[str]: ...
    def record_outcomes(self, outcomes: Sequence[SubmissionOutcome], now: datetime) -> None: ...
    def rebase(self, key: str, condition_uuid: str, now: datetime) -> None: ...
    def hold_claim(self, key: str, claim: str | None) -> bool: ...
    def send_again(self, sent: Sequence[tuple[str, str]], attempt: Attempt, now: datetime) -> None: ...


@dataclass
class Work:
    """One record's submission in progress."""

    record: Record
    plan: Plan
    current_uuid: str
    claim: str | None = None  # the log entry's claim when the record was planned
    api: str = "rest"  # the API it is sent through (`_Submitter.api_for`)
    claimed_at: float | None = None  # time.time() when this run last took the record's claim
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
        in_doubt: bool = False,
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
            in_doubt=in_doubt,
            held_claim=self.claimed_at is not None,
            content_hash=self.plan.content_hash,
        )


class RecordExchange:
    """How each record reaches OpenMRS; many run at once (the client's semaphore bounds the requests)."""

    # Whether every send must be claimed in the log first (`PendingSubmission.claimed`), or only
    # corrections (when a create carries the record's uuid, OpenMRS itself keeps one copy).
    claims_every_send = False

    def __init__(
        self,
        client: OpenMRSClient,
        log: SubmissionLogLike,
        now: datetime,
        clock: Callable[[], datetime],
        *,
        allow_noncoded: bool,
        stored_hash: StoredHash | None = None,
    ) -> None:
        self.client, self.log, self.now, self.clock = client, log, now, clock
        self.allow_noncoded = allow_noncoded
        self.stored_hash = stored_hash

    def note(self, work: Work, method: str, status: int | None, message: str) -> None:
        text = sanitize(message, secrets=(str(work.record.get("patient_id") or ""),))
        work.attempts.append(Attempt(at=self.clock(), method=method, status=status, message=text))

    async def submit_one(self, work: Work) -> SubmissionOutcome:
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

    async def attempt(self, work: Work, number: int) -> SubmissionOutcome:
        try:
            return await self.attempt_unchecked(work, number)
        except TransientOpenMRSError as error:
            self.note(work, error.method, error.status, str(error))
            raise

    async def resolve(self, work: Work) -> tuple[str, str | None] | SubmissionOutcome:
        """The patient's uuid and the concept's (None: non-coded), or why the record cannot be sent."""
        record = work.record
        patients = await self.client.patient_uuids(record["patient_id"])
        if len(patients) != 1:
            state = SubmissionState.PATIENT_NOT_FOUND if not patients else SubmissionState.AMBIGUOUS_PATIENT
            self.note(work, "GET", 200, f"{len(patients)} patients carry this identifier")
            return work.outcome(state)
        concept = None
        if await self.client.concept_source_exists():
            concept = await self.client.concept_uuid(record["tm2_code"])
        if concept is None and not self.allow_noncoded:
            self.note(work, "GET", 200, f"no concept maps {record['tm2_code']} in the concept source")
            return work.outcome(SubmissionState.CONCEPT_NOT_FOUND)
        return patients[0], concept

    async def attempt_unchecked(self, work: Work, number: int) -> SubmissionOutcome:
        """One attempt at the record: look, send what OpenMRS lacks, say how it ended (by API)."""
        raise NotImplementedError

    async def overtaken(self, work: Work) -> SubmissionOutcome | None:
        """Asked right before a correction: if newer content was stored for the record since it was
        planned, this one is not sent (it would replace, in OpenMRS, what another run may just have
        sent from the newer copy). The submitter plans the record again from the store."""
        if self.stored_hash is None:
            return None
        stored = await asyncio.to_thread(self.stored_hash, work.key)
        if stored is None or stored == work.plan.content_hash:
            return None
        self.note(work, "-", None, "newer content was stored since this was planned: sent with it instead")
        return work.outcome(SubmissionState.FAILED_RETRYABLE)

    async def hold(self, work: Work) -> bool:
        """Whether this run may send what OpenMRS cannot tell apart from another run's copy (a REST
        correction, any FHIR write) now: it took the record's claim less than HELD_SEND_DEADLINE_S
        ago (the mark, or an earlier hold), or takes (renews) it now. Asked before every such send,
        whatever the plan was (a record planned as a create can meet another run's version with
        other content). Wall time, as the log's lease: a monotonic clock stops while a laptop sleeps,
        and a claim taken before a long sleep would still look fresh here after another run took it."""
        if work.claimed_at is not None and time.time() <= work.claimed_at + HELD_SEND_DEADLINE_S:
            return True
        if not await asyncio.to_thread(self.log.hold_claim, work.key, work.claim):
            return False
        work.claimed_at = time.time()
        return True

    async def send_held(self, work: Work, send: Callable[[float], Awaitable[_Sent]]) -> _Sent | None:
        """Send a claimed write under this run's claim (`hold`): `send` gets the deadline (wall time)
        after which the client must not send it (it waited too long for a request slot: the claim
        is taken again first). None: another run holds the record."""
        while True:
            if not await self.hold(work):
                return None
            assert work.claimed_at is not None
            try:
                return await send(work.claimed_at + HELD_SEND_DEADLINE_S)
            except ClaimLapsed:
                work.claimed_at = None

    async def write_held(
        self, work: Work, method: str, send: Callable[[float], Awaitable[WriteResult]]
    ) -> WriteResult | SubmissionOutcome:
        """A claimed write, sent once (`send_held`): what OpenMRS answered, or how the record ends in
        this run when another run holds it, or when the answer was lost. Then OpenMRS may still be
        writing it, and a look now could miss it and send it again: the record is in doubt, and no
        run sends it until the lease has passed (`SubmissionLog`)."""
        try:
            sent = await self.send_held(work, send)
        except TransientOpenMRSError as error:
            if not error.in_doubt:
                raise
            self.note(work, method, error.status, f"{error}; {IN_DOUBT_NOTE}")
            return work.outcome(SubmissionState.FAILED_RETRYABLE, in_doubt=True)
        if sent is None:
            return work.outcome(SubmissionState.IN_FLIGHT, left_to_other_run=True)
        return sent
