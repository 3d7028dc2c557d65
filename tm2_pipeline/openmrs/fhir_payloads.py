"""A stored TM2 record -> the FHIR R4 Condition OpenMRS's FHIR2 module accepts, and the tests "is this
condition the record's" and "does it already say what the record says".

Pure: no I/O. FHIR2 ignores a client `id` on create, so the record's own uuid travels in the note
(`record_reference`): it is what a search finds the record's condition by after a lost answer. The
patient identifier never goes into the resource (only the patient's OpenMRS uuid does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tm2_pipeline.openmrs.payloads import additional_detail, code_label, noncoded_text, system_label

CLINICAL_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-category"
NON_CODED_EXTENSION = "http://fhir.openmrs.org/ext/non-coded-condition"
CLINICAL_STATUS = "active"
VERIFICATION_STATUS = "confirmed"
PROBLEM_LIST_ITEM = "problem-list-item"
REFERENCE_LABEL = "Record:"


def record_reference(record_uuid: str) -> str:
    """The note's last part, naming the record: "Record: <uuid5 of the record key>"."""
    return f"{REFERENCE_LABEL} {record_uuid}"


def _status(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def fhir_condition(
    record: Mapping[str, Any], *, record_uuid: str, patient_uuid: str, concept_uuid: str | None
) -> dict[str, Any]:
    """The body of `POST /Condition` for one record (no `id`: OpenMRS assigns it).

    `concept_uuid` None means: no concept maps the code, record it as non-coded text (FHIR2's
    extension). A coding without a system is a concept uuid to FHIR2, whatever concept sources the
    server has registered for FHIR.
    """
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "subject": {"reference": f"Patient/{patient_uuid}", "type": "Patient"},
        "clinicalStatus": _status(CLINICAL_SYSTEM, CLINICAL_STATUS),
        "verificationStatus": _status(VERIFICATION_SYSTEM, VERIFICATION_STATUS),
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": PROBLEM_LIST_ITEM}]}],
        "onsetDateTime": record["diagnosis_date"],
        "note": [{"text": f"{additional_detail(record)}; {record_reference(record_uuid)}"}],
    }
    if concept_uuid:
        resource["code"] = {"coding": [{"code": concept_uuid}]}
    else:
        resource["extension"] = [{"url": NON_CODED_EXTENSION, "valueString": noncoded_text(record)}]
    return resource


def fhir_update(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The body of `PUT /Condition/{id}`: the condition as OpenMRS returned it, with what the record
    says put over it. FHIR2 rebuilds the whole condition from the body, so everything else it holds
    (recorder, subject, category, and the statuses, which are the clinicians' once it exists) is sent
    back as found."""
    updated = {
        name: value for name, value in found.items() if name not in ("meta", "text", "code", "extension")
    }
    for name in ("onsetDateTime", "note", "code", "extension"):
        if name in wanted:
            updated[name] = wanted[name]
    for name in ("clinicalStatus", "verificationStatus"):
        updated.setdefault(name, wanted[name])  # FHIR2 requires a clinical status
    other_extensions = [e for e in found.get("extension") or [] if e.get("url") != NON_CODED_EXTENSION]
    if other_extensions:
        updated["extension"] = other_extensions + list(wanted.get("extension") or [])
    updated["id"] = found["id"]
    return updated


def _coding_code(concept: Mapping[str, Any] | None, system: str | None) -> str | None:
    for coding in (concept or {}).get("coding") or []:
        if coding.get("system") == system:
            return coding.get("code")
    return None


def _non_coded(resource: Mapping[str, Any]) -> str | None:
    for extension in resource.get("extension") or []:
        if extension.get("url") == NON_CODED_EXTENSION:
            return extension.get("valueString")
    return None


def _note(resource: Mapping[str, Any]) -> str:
    notes = resource.get("note") or [{}]
    return notes[0].get("text") or ""


def _note_content(resource: Mapping[str, Any]) -> str:
    """The note without the record's reference: a condition created over the REST API has none."""
    text = _note(resource)
    head, separator, _ = text.rpartition(f"; {REFERENCE_LABEL} ")
    return head if separator else text


def is_record_condition(resource: Mapping[str, Any], record_uuid: str) -> bool:
    """True when a condition OpenMRS listed is the record's: its id is the record's uuid (created over
    the REST API, which keeps a client uuid), or its note names the record."""
    return resource.get("id") == record_uuid or _note(resource).endswith(record_reference(record_uuid))


def written_for_record(resource: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """True when a condition without a record's reference was written for this record all the same:
    its note begins as `additional_detail` begins for it (the code, then the system) and its onset is
    the record's day. Versions made over the REST API (before a switch to FHIR, or an edit in the
    REST UI, which copies the note) carry no reference; with the patient, that is the record key."""
    note = _note(resource)
    if f"; {REFERENCE_LABEL} " in note:
        return False
    parts = note.split("; ")
    code = code_label(record)
    return (
        len(parts) > 1
        and (parts[0] == code or parts[0].startswith(f"{code} ("))
        and parts[1] == system_label(record)
        and str(resource.get("onsetDateTime") or "")[:10] == record["diagnosis_date"]
    )


def fhir_condition_matches(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """True when a condition OpenMRS returned already says what the record says: the concept (or the
    non-coded text), the onset date (its date part) and the note (the record's reference aside: found
    by its id, a condition created over the REST API is the record's too). Not the statuses, which are
    the clinicians' once the condition exists (as in `payloads.condition_matches`)."""
    want_concept = _coding_code(wanted.get("code"), None)
    if _coding_code(found.get("code"), None) != want_concept:
        return False
    if want_concept is None and _non_coded(found) != _non_coded(wanted):
        return False
    same_day = str(found.get("onsetDateTime") or "")[:10] == wanted["onsetDateTime"]
    return same_day and _note_content(found) == _note_content(wanted)
