"""One record's exchange with OpenMRS, exactly once: look, create or correct, and note each attempt.

A create carries the record's own uuid, so OpenMRS itself refuses a second copy; anything sent before
(by an earlier run, or an earlier attempt of this one) is looked up before it is sent again. A
correction has no uuid of its own: it is posted only under the log's claim (`hold`), and never twice
in one run when the first one's answer is in doubt. The sliding window over many records is
submitter.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from tm2_pipeline.openmrs.client import OpenMRSClient
from tm2_pipeline.openmrs.decisions import Action, Plan
from tm2_pipeline.openmrs.errors import OpenMRSError, OpenMRSNotRetryable, TransientOpenMRSError
from tm2_pipeline.openmrs.payloads import condition_matches, condition_payload, correction_payload
from tm2_pipeline.openmrs.responses import WriteResult, is_duplicate_error, sanitize
from tm2_pipeline.openmrs.states import (
    Attempt,
    PendingSubmission,
    SubmissionEntry,
    SubmissionOutcome,
    SubmissionState,
)
from tm2_pipeline.openmrs.versions import latest_version

Record = Mapping[str, Any]


class SubmissionLogLike(Protocol):
    def entries_for(self, keys: Sequence[str]) -> dict[str, SubmissionEntry]: ...
    def mark_in_flight(
        self, pending: Sequence[PendingSubmission], server: str, now: datetime
    ) -> set[str]: ...
    def record_outcomes(self, outcomes: Sequence[SubmissionOutcome], now: datetime) -> None: ...
    def rebase(self, key: str, condition_uuid: str, now: datetime) -> None: ...
    def hold_claim(self, key: str, claim: str | None) -> bool: ...


@dataclass
class Work:
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


class RecordExchange:
    """How each record reaches OpenMRS; many run at once (the client's semaphore bounds the requests)."""

    def __init__(
        self,
        client: OpenMRSClient,
        log: SubmissionLogLike,
        now: datetime,
        clock: Callable[[], datetime],
        *,
        allow_noncoded: bool,
    ) -> None:
        self.client, self.log, self.now, self.clock = client, log, now, clock
        self.allow_noncoded = allow_noncoded

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

    async def attempt_unchecked(self, work: Work, number: int) -> SubmissionOutcome:
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
        if concept is None and not self.allow_noncoded:
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
        self, work: Work, found: dict[str, Any], payload: dict[str, Any], patient_uuid: str
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
        return await self.correct(work, found["uuid"], payload, held=True)

    async def create(self, work: Work, payload: dict[str, Any]) -> SubmissionOutcome:
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

    async def hold(self, work: Work) -> bool:
        """Whether this run may post a new version of the record now: a correction has no uuid of its
        own, so two runs posting one would fork the condition. Asked before every post, whatever the
        plan was (a record planned as a create can meet another run's version with other content)."""
        return await asyncio.to_thread(self.log.hold_claim, work.key, work.claim)

    async def correct(
        self, work: Work, uuid: str, payload: dict[str, Any], *, held: bool = False
    ) -> SubmissionOutcome:
        """Post a new version of `uuid`; `held`: the claim was just taken (by `settle`), not again."""
        if not held and not await self.hold(work):
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
