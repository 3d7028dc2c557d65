"""One record's exchange with OpenMRS through FHIR2's Condition, exactly once (OPENMRS_API=fhir).

FHIR2 ignores a client id on create, so OpenMRS cannot refuse a second copy of a record. Instead:
- every send is claimed in the log first (`claims_every_send`): one run at a time per record;
- before any create, the record's condition is searched for (the patient's conditions of that onset
  day, the one whose note names the record's uuid, or whose id is it, or else one the REST API wrote
  for the record: its note begins with the record's code and system);
- a create whose answer is in doubt (a timeout after sending, a cut connection, a gateway's 502/504)
  is not sent again by the same run: a search now could miss a condition OpenMRS is still writing.
  The next run searches first, once it has landed.
An update (`PUT`) replaces the condition in place and keeps its id, and is read back (FHIR2 updates a
voided condition too); one whose answer is in doubt is left alone like a create, so that another
run's newer content cannot land before it. Lookups (patient, concept) are the REST API's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tm2_pipeline.identity import condition_uuid
from tm2_pipeline.openmrs.decisions import Action
from tm2_pipeline.openmrs.errors import TransientOpenMRSError
from tm2_pipeline.openmrs.fhir_client import FhirConditions
from tm2_pipeline.openmrs.fhir_payloads import (
    fhir_condition,
    fhir_condition_matches,
    fhir_update,
    is_record_condition,
    written_for_record,
)
from tm2_pipeline.openmrs.record_exchange import RecordExchange, Work
from tm2_pipeline.openmrs.states import SubmissionOutcome, SubmissionState


class FhirRecordExchange(RecordExchange):
    claims_every_send = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conditions = FhirConditions(self.client)

    async def attempt_unchecked(self, work: Work, number: int) -> SubmissionOutcome:
        resolved = await self.resolve(work)
        if isinstance(resolved, SubmissionOutcome):
            return resolved
        patient_uuid, concept = resolved
        record_uuid = condition_uuid(work.key)
        wanted = fhir_condition(
            work.record, record_uuid=record_uuid, patient_uuid=patient_uuid, concept_uuid=concept
        )
        known = work.plan.corrects  # the log holds the condition's id
        found, gone = None, False
        if known:
            read = await self.conditions.read(work.current_uuid)
            found, gone = read.resource, read.gone

        def search_again() -> Awaitable[dict[str, Any] | None]:
            return self.search(work, patient_uuid, record_uuid, wanted["onsetDateTime"])

        if found is None:
            # Also when the logged id is gone: an edit in OpenMRS's REST UI replaces the condition
            # with a new id, and the note (the record's uuid in it) goes with it.
            found = await search_again()
        if found is not None:
            return await self.settle(work, found, wanted, search_again)
        if gone:
            self.note(work, "GET", 410, "voided in OpenMRS; not sent again")
            return work.outcome(SubmissionState.REJECTED_BY_SERVER)
        if known:
            self.note(work, "GET", 404, "the condition this record updates is no longer in OpenMRS")
            return work.outcome(SubmissionState.REJECTED_BY_SERVER)
        if work.plan.action is Action.VERIFY_CREATE or number > 1:
            self.note(work, "GET", 200, "not in OpenMRS yet")
        return await self.create(work, wanted)

    async def search(
        self, work: Work, patient_uuid: str, record_uuid: str, onset_date: str
    ) -> dict[str, Any] | None:
        """The record's condition among the patient's of that day: the one naming the record, else one
        written for it over the REST API; the logged one first if several."""
        listed = await self.conditions.search(patient_uuid, onset_date)
        mine = [resource for resource in listed if is_record_condition(resource, record_uuid)]
        if not mine:
            mine = [resource for resource in listed if written_for_record(resource, work.record)]
        mine.sort(key=lambda resource: resource.get("id") != work.current_uuid)
        return mine[0] if mine else None

    async def settle(
        self,
        work: Work,
        found: dict[str, Any],
        wanted: dict[str, Any],
        search_again: Callable[[], Awaitable[dict[str, Any] | None]] | None,
    ) -> SubmissionOutcome:
        """OpenMRS holds the record's condition: done if it says the same, else update it in place.
        `search_again`: how to find it if it is replaced meanwhile (asked once, see `updated`)."""
        if fhir_condition_matches(found, wanted):
            self.note(work, "GET", 200, "already present")
            return work.outcome(SubmissionState.ALREADY_PRESENT, uuid=found["id"], confirmed=True)
        if overtaken := await self.overtaken(work):
            return overtaken
        body = fhir_update(found, wanted)
        # A lost answer leaves it in doubt too: sent again later it would be harmless, but another
        # run's newer content could land first and this one after it.
        result = await self.write_held(
            work, "PUT", lambda deadline: self.conditions.update(found["id"], body, not_after=deadline)
        )
        if isinstance(result, SubmissionOutcome):
            return result
        self.note(work, "PUT", result.status, "updated" if result.ok else result.message)
        if result.ok:
            return await self.updated(work, found["id"], wanted, search_again)
        if result.status >= 500:
            raise TransientOpenMRSError(
                f"condition update: {result.status}", method="PUT", status=result.status
            )
        return work.outcome(SubmissionState.REJECTED_BY_SERVER)

    async def updated(
        self,
        work: Work,
        condition_id: str,
        wanted: dict[str, Any],
        search_again: Callable[[], Awaitable[dict[str, Any] | None]] | None,
    ) -> SubmissionOutcome:
        """A PUT answered 200: read the condition back. FHIR2 updates a condition that was voided after
        our read without a word (BaseFhirService.update does not check), so only a read, which answers
        410 for it, tells whether the record is in OpenMRS. Voided by an edit in the REST UI, it has a
        new version (the note copied): that one is searched for and updated instead."""
        read = await self.conditions.read(condition_id)
        if read.resource is None and search_again is not None:
            replaced = await search_again()
            if replaced is not None and replaced.get("id") != condition_id:
                self.note(
                    work, "GET", 410, "replaced in OpenMRS while it was updated: updating its new version"
                )
                return await self.settle(work, replaced, wanted, None)
        if read.resource is None:
            status, why = (410, "voided") if read.gone else (404, "removed")
            self.note(work, "GET", status, f"{why} in OpenMRS while it was updated; not sent again")
            return work.outcome(SubmissionState.REJECTED_BY_SERVER)
        return work.outcome(
            SubmissionState.SUBMITTED, uuid=condition_id, confirmed=True, created=True, corrected=True
        )

    async def create(self, work: Work, wanted: dict[str, Any]) -> SubmissionOutcome:
        result = await self.write_held(
            work, "POST", lambda deadline: self.conditions.create(wanted, not_after=deadline)
        )
        if isinstance(result, SubmissionOutcome):
            return result
        self.note(work, "POST", result.status, "created" if result.ok else result.message)
        if result.ok and result.body:
            return work.outcome(
                SubmissionState.SUBMITTED, uuid=result.body["id"], confirmed=True, created=True
            )
        if result.status >= 500:
            # FHIR2 answered, so its transaction is over: the retry's search sees whatever it wrote.
            raise TransientOpenMRSError(
                f"condition create: {result.status}", method="POST", status=result.status
            )
        return work.outcome(SubmissionState.REJECTED_BY_SERVER)
