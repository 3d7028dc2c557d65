"""A record -> FHIR2's Condition, and the tests "is it the record's" and "does it say the same" (pure); what
the FHIR client makes of FHIR2's and a gateway's answers (a mock transport)."""

from __future__ import annotations

from tm2_pipeline.openmrs.fhir_payloads import (
    CATEGORY_SYSTEM,
    CLINICAL_SYSTEM,
    NON_CODED_EXTENSION,
    fhir_condition,
    fhir_condition_matches,
    fhir_update,
    is_record_condition,
    record_reference,
)
from tm2_pipeline.openmrs.responses import error_message
from tm2_pipeline_tests.openmrs_sample_records import make_record, with_changes

RECORD_UUID = "0b7a6f43-3f0e-5d52-9a43-5b7f2d8c9e10"
PATIENT = "patient-uuid-1"
CONCEPT = "concept-uuid-sk01"


def build(record, concept=CONCEPT):
    return fhir_condition(record, record_uuid=RECORD_UUID, patient_uuid=PATIENT, concept_uuid=concept)


def as_returned(resource: dict, condition_id: str = "server-id-1") -> dict:
    """The resource as FHIR2 returns it: its id, meta, a recorder, a datetime onset, the concept's name."""
    returned = {
        **resource,
        "id": condition_id,
        "meta": {"versionId": "1", "lastUpdated": "2025-06-01T12:00:00.000+00:00"},
        "recorder": {"reference": "Practitioner/user-1", "type": "Practitioner"},
        "onsetDateTime": resource["onsetDateTime"] + "T00:00:00+05:30",
    }
    if "code" in resource:
        returned["code"] = {"coding": [{**resource["code"]["coding"][0], "display": "Vata disorder"}]}
    return returned


def test_a_coded_record_becomes_a_problem_list_condition_naming_the_record_in_its_note() -> None:
    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    resource = build(record)
    assert "id" not in resource  # FHIR2 assigns it
    assert resource["subject"] == {"reference": f"Patient/{PATIENT}", "type": "Patient"}
    assert resource["code"] == {"coding": [{"code": CONCEPT}]}  # no system: a concept uuid to FHIR2
    assert "extension" not in resource
    assert resource["clinicalStatus"]["coding"] == [{"system": CLINICAL_SYSTEM, "code": "active"}]
    assert resource["category"][0]["coding"][0] == {"system": CATEGORY_SYSTEM, "code": "problem-list-item"}
    assert resource["onsetDateTime"] == "2024-01-15"
    note = resource["note"][0]["text"]
    assert note.startswith("ICD-11 TM2 SK01") and "Severity: Mild" in note
    assert note.endswith(record_reference(RECORD_UUID))
    assert "MRN-01001" not in str(resource)


def test_an_unmapped_code_is_sent_as_non_coded_text() -> None:
    resource = build(make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild"), concept=None)
    assert "code" not in resource
    (extension,) = resource["extension"]
    assert extension["url"] == NON_CODED_EXTENSION and extension["valueString"].startswith("SK01")


def test_a_condition_is_the_records_by_its_note_or_by_its_id() -> None:
    resource = as_returned(build(make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")))
    assert is_record_condition(resource, RECORD_UUID)
    assert not is_record_condition(resource, "another-record-uuid")
    created_over_rest = {"id": RECORD_UUID, "note": [{"text": "entered by a clinician"}]}
    assert is_record_condition(created_over_rest, RECORD_UUID)
    assert not is_record_condition({"id": "x", "note": [{"text": "no reference"}]}, RECORD_UUID)


def test_matches_compares_concept_onset_day_and_note_not_the_statuses() -> None:
    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    wanted = build(record)
    found = as_returned(wanted)
    assert fhir_condition_matches(found, wanted)
    assert not fhir_condition_matches(found, build(with_changes(record, severity="Severe")))
    assert not fhir_condition_matches(found, build(record, concept="another-concept"))
    assert not fhir_condition_matches(found, build(record, concept=None))
    # A clinician's status change in OpenMRS is theirs: the condition still holds the record.
    inactive = {**found, "clinicalStatus": {"coding": [{"system": CLINICAL_SYSTEM, "code": "inactive"}]}}
    assert fhir_condition_matches(inactive, wanted)
    assert not fhir_condition_matches({**found, "onsetDateTime": "2024-01-16T00:00:00+05:30"}, wanted)
    created_over_rest = {
        **found,
        "id": RECORD_UUID,
        "note": [{"text": wanted["note"][0]["text"].split("; Record:")[0]}],
    }
    assert fhir_condition_matches(created_over_rest, wanted)
    noncoded = build(record, concept=None)
    assert fhir_condition_matches(as_returned(noncoded), noncoded)
    assert not fhir_condition_matches(
        as_returned(noncoded), build(with_changes(record, tm2_code="SK02"), None)
    )


def test_an_update_keeps_what_openmrs_holds_and_puts_the_record_over_it() -> None:
    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    found = as_returned(build(record, concept=None))
    found["extension"].append({"url": "http://example.org/other", "valueString": "kept"})
    wanted = build(with_changes(record, severity="Severe"))
    body = fhir_update(found, wanted)
    assert body["id"] == "server-id-1" and "meta" not in body
    assert body["recorder"] == found["recorder"] and body["subject"] == found["subject"]
    assert body["code"] == wanted["code"] and body["note"] == wanted["note"]
    assert body["extension"] == [{"url": "http://example.org/other", "valueString": "kept"}]  # non-coded gone
    assert fhir_condition_matches({**body, "meta": {}}, wanted)


def test_an_update_keeps_the_statuses_a_clinician_set() -> None:
    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    resolved = {"coding": [{"system": CLINICAL_SYSTEM, "code": "resolved"}]}
    found = {**as_returned(build(record)), "clinicalStatus": resolved}
    wanted = build(with_changes(record, severity="Severe"))
    body = fhir_update(found, wanted)
    assert body["clinicalStatus"] == resolved and body["note"] == wanted["note"]
    assert body["verificationStatus"] == found["verificationStatus"]
    # A condition without statuses (written by another client) gets the record's: FHIR2 needs one.
    bare = {name: value for name, value in found.items() if not name.endswith("Status")}
    assert fhir_update(bare, wanted)["clinicalStatus"] == wanted["clinicalStatus"]


def test_a_fhir_error_is_read_from_its_operation_outcome() -> None:
    outcome = (
        '{"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing", '
        '"diagnostics": "Could not find condition with Id abc"}]}'
    )
    assert error_message(outcome) == "Could not find condition with Id abc"


def test_a_gateway_page_answering_a_write_is_in_doubt_and_fhir2s_own_500_is_not() -> None:
    import asyncio

    import httpx
    import pytest

    from tm2_pipeline.openmrs.client import OpenMRSClient
    from tm2_pipeline.openmrs.client_config import ClientConfig
    from tm2_pipeline.openmrs.errors import TransientOpenMRSError
    from tm2_pipeline.openmrs.fhir_client import FhirConditions

    outcome_500 = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": "x"}]}
    answers = {
        "page": httpx.Response(500, text="<html><body>Internal Server Error (nginx)</body></html>"),
        "fhir2": httpx.Response(500, json=outcome_500),
    }

    def openmrs(kind: str):
        def handle(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/session"):
                return httpx.Response(200, json={"authenticated": True})
            return answers[kind]

        return httpx.MockTransport(handle)

    async def create(kind: str):
        config = ClientConfig("http://emr.invalid/openmrs", "admin", "Admin123", allow_insecure=True)
        async with OpenMRSClient(config, transport=openmrs(kind)) as client:
            return await FhirConditions(client).create({"resourceType": "Condition"})

    with pytest.raises(TransientOpenMRSError) as caught:
        asyncio.run(create("page"))
    assert caught.value.in_doubt  # OpenMRS behind it may still be writing
    assert asyncio.run(create("fhir2")).status == 500  # FHIR2 answered: the caller searches again
