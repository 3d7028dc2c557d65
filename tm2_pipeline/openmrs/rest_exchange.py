"""One record's exchange with OpenMRS's REST API, exactly once: look, create or correct.

A create carries the record's own uuid, so OpenMRS itself refuses a second copy; anything sent before
(by an earlier run, or an earlier attempt of this one) is looked up before it is sent again. A
correction has no uuid of its own: it is posted only under the log's claim (`hold`), and never twice
in one run when the first one's answer is in doubt.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tm2_pipeline.openmrs.decisions import Action
from tm2_pipeline.openmrs.errors import TransientOpenMRSError
from tm2_pipeline.openmrs.payloads import condition_matches, condition_payload, correction_payload
from tm2_pipeline.openmrs.record_exchange import RecordExchange, Work
from tm2_pipeline.openmrs.responses import is_duplicate_error
from tm2_pipeline.openmrs.rest_conditions import RestConditions
from tm2_pipeline.openmrs.states import SubmissionOutcome, SubmissionState
from tm2_pipeline.openmrs.versions import latest_version


class RestRecordExchange(RecordExchange):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conditions = RestConditions(self.client)

    async def attempt_unchecked(self, work: Work, number: int) -> SubmissionOutcome:
        resolved = await self.resolve(work)
        if isinstance(resolved, SubmissionOutcome):
            return resolved
        record, (patient_uuid, concept) = work.record, resolved
        payload = condition_payload(
            record, condition_uuid=work.plan.condition_uuid, patient_uuid=patient_uuid, concept_uuid=concept
        )
        action, retried = work.plan.action, number > 1
        if action is Action.CREATE and not retried:
            return await self.create(work, payload)
        if action is Action.CORRECT and not retried:
            return await self.correct(work, work.current_uuid, payload)
        if action in (Action.CREATE, Action.VERIFY_CREATE):
            existing = await self.conditions.get(work.current_uuid)
            if existing is None:
                self.note(work, "GET", 404, "not in OpenMRS yet")
                return await self.create(work, payload)
            return await self.settle(work, existing, payload, patient_uuid)
        latest = await latest_version(self.conditions, patient_uuid, work.current_uuid)
        if latest is None:
            latest = await self.conditions.get(work.current_uuid)
        if latest is None:
            self.note(work, "GET", 404, "the condition this record updates is no longer in OpenMRS")
            return work.outcome(SubmissionState.REJECTED_BY_SERVER)
        return await self.settle(work, latest, payload, patient_uuid)

    async def settle(
        self, work: Work, found: dict[str, Any], payload: dict[str, Any], patient_uuid: str
    ) -> SubmissionOutcome:
        """OpenMRS has a version of this record: done if it matches, else send a new version of it."""
        if found.get("voided"):
            newer = await latest_version(self.conditions, patient_uuid, found["uuid"])
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

    async def create(self, work: Work, payload: dict[str, Any]) -> SubmissionOutcome:
        result = await self.conditions.create(payload)
        if result.ok:
            self.note(work, "POST", result.status, "created")
            return work.outcome(SubmissionState.SUBMITTED, confirmed=True, created=True)
        self.note(work, "POST", result.status, result.message)
        # OpenMRS answers a uuid it already holds with a 500; behind some gateways or versions it is a
        # 409 or a 400 naming the duplicate. Any of them: look before calling it refused.
        if result.status >= 500 or result.status == 409 or is_duplicate_error(result.message):
            existing = await self.conditions.get(work.current_uuid)
            if existing is not None:
                return await self.settle(work, existing, payload, payload["patient"])
            if result.status >= 500:
                duplicate = is_duplicate_error(result.message)
                reason = "duplicate reported but absent" if duplicate else "not written"
                raise TransientOpenMRSError(
                    f"condition create: {result.status}, {reason}", method="POST", status=result.status
                )
        return work.outcome(SubmissionState.REJECTED_BY_SERVER)

    async def correct(self, work: Work, uuid: str, payload: dict[str, Any]) -> SubmissionOutcome:
        """Post a new version of `uuid`, under this run's claim (`hold`), unless newer content was
        stored meanwhile (`overtaken`)."""
        if overtaken := await self.overtaken(work):
            return overtaken
        body = correction_payload(payload)
        result = await self.write_held(
            work,
            "POST",
            lambda deadline: self.conditions.update(uuid, body, not_after=deadline),
        )
        if isinstance(result, SubmissionOutcome):
            return result
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
