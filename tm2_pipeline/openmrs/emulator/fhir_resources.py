"""FHIR2's R4 Condition <-> the emulator's stored condition. Pure: no HTTP.

As read in openmrs-module-fhir2 (api/src/main/java/org/openmrs/module/fhir2/...): the mapping of
translators/impl/ConditionTranslatorImpl.java, with ConditionClinicalStatusTranslatorImpl,
ConditionVerificationStatusTranslatorImpl, ConceptTranslatorImpl, ReferenceHandlingTranslator and
api/util/FhirUtils.getOpenmrsConditionType:
- clinicalStatus: FHIR2 knows two codes. ACTIVE <-> "active"; every other status reads as "inactive"
  and every code but "active" is stored as INACTIVE (RECURRENCE, REMISSION... do not round-trip).
- code: first the concept uuid as a coding without a system (display: the concept's name), then one
  coding per coding system fhir_concept_source maps one of its concept sources to. On input the codings
  are tried in order, the first naming a concept wins (no system: a concept uuid; a system: through
  fhir_concept_source); the text of a non-coded condition is an extension.
- onsetDateTime / abatementDateTime (or a Period's start / end): the emulator keeps dates, as its
  REST side does; a date-time with an offset is taken in UTC, the server's zone.
- On update only note, onset and abatement are kept when absent; everything else is rebuilt.
Where FHIR2 would fail with a 500 (a status coding without a system: NullPointerException) or save a
condition with no concept, the emulator refuses with 400 or 422 and says so.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tm2_pipeline.openmrs.emulator.auth import USER_PERSON, USER_UUID
from tm2_pipeline.openmrs.emulator.state import EmulatorState

CLINICAL_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-category"
NON_CODED_EXTENSION = "http://fhir.openmrs.org/ext/non-coded-condition"
PROBLEM_LIST_ITEM = "problem-list-item"
ENCOUNTER_DIAGNOSIS = "encounter-diagnosis"
VERIFICATION = {"confirmed": "CONFIRMED", "provisional": "PROVISIONAL"}
_DATE_TIME = re.compile(r"^\d{4}(-\d{2}(-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?)?)?$")


class Refused(Exception):
    """A request FHIR2 turns down: HTTP status and the OperationOutcome's diagnostics."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- dates ---------------------------------------------------------------------------------------


def fhir_period(text: Any) -> tuple[date, date]:
    """[start, end) of a FHIR date or dateTime at its precision (year, month, day; a time: its day)."""
    if not isinstance(text, str) or not _DATE_TIME.match(text):
        raise ValueError(f'Invalid date/time format: "{text}"')
    try:
        if len(text) == 4:
            return date(int(text), 1, 1), date(int(text) + 1, 1, 1)
        if len(text) == 7:
            start = date(int(text[:4]), int(text[5:7]), 1)
            return start, (start + timedelta(days=31)).replace(day=1)
        if len(text) == 10:
            day = date.fromisoformat(text)
        else:
            moment = datetime.fromisoformat(text)
            day = (moment.astimezone(UTC) if moment.tzinfo else moment).date()
    except ValueError:
        raise ValueError(f'Invalid date/time format: "{text}"') from None
    return day, day + timedelta(days=1)


def _date_of(body: dict[str, Any], name: str, period_end: str) -> str | None:
    """The date of `<name>DateTime`, else of `<name>Period`'s start (onset) or end (abatement)."""
    value = body.get(f"{name}DateTime")
    if value is None and isinstance(body.get(f"{name}Period"), dict):
        value = body[f"{name}Period"].get(period_end)
    if value is None:
        return None
    try:
        return fhir_period(value)[0].isoformat()
    except ValueError as problem:
        raise Refused(400, str(problem)) from None


def _moment(value: str, timespec: str) -> str:
    moment = datetime.fromisoformat(value)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec=timespec)


# --- stored -> FHIR ------------------------------------------------------------------------------


def codeable_concept(concept: dict[str, Any], state: EmulatorState) -> dict[str, Any]:
    """ConceptTranslatorImpl: the uuid coding, then per mapped system the SAME-AS code (or the only one)."""
    codings: list[dict[str, Any]] = [{"code": concept["uuid"], "display": concept["name"]}]
    urls = {source.lower(): url for url, source in state.fhir_concept_sources.items()}
    by_url: dict[str, dict[str, str]] = {}
    for mapping in concept["mappings"]:
        url = urls.get(mapping["source"].lower())
        if url:
            by_url.setdefault(url, {})[(mapping.get("mapType") or "SAME-AS").upper()] = mapping["code"]
    for url, codes in by_url.items():
        code = next(iter(codes.values())) if len(codes) == 1 else codes.get("SAME-AS")
        if code:
            codings.append({"system": url, "code": code})
    return {"coding": codings, "text": concept["name"]}


def _patient_reference(state: EmulatorState, patient_uuid: str) -> dict[str, Any]:
    reference: dict[str, Any] = {"reference": f"Patient/{patient_uuid}", "type": "Patient"}
    patient = state.patients.get(patient_uuid)
    if patient:
        preferred = next((i for i in patient["identifiers"] if i.get("preferred")), patient["identifiers"][0])
        name = f"{patient['givenName']} {patient['familyName']}"
        reference["display"] = f"{name} ({preferred['identifierType']}: {preferred['identifier']})"
    return reference


def to_fhir(condition: dict[str, Any], state: EmulatorState) -> dict[str, Any]:
    """The Condition resource FHIR2 answers for a stored condition (HAPI's element order)."""
    version = condition.get("version", 1)
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": condition["uuid"],
        "meta": {
            "versionId": str(version),
            "lastUpdated": _moment(condition.get("dateChanged") or condition["dateCreated"], "milliseconds"),
        },
    }
    if condition.get("nonCoded") is not None:
        resource["extension"] = [{"url": NON_CODED_EXTENSION, "valueString": condition["nonCoded"]}]
    if condition.get("clinicalStatus"):
        code = "active" if condition["clinicalStatus"] == "ACTIVE" else "inactive"
        resource["clinicalStatus"] = {"coding": [{"system": CLINICAL_SYSTEM, "code": code}]}
    if condition.get("verificationStatus"):
        status = condition["verificationStatus"]
        coding = {"system": VERIFICATION_SYSTEM, "code": status.lower(), "display": status.replace("_", "-")}
        resource["verificationStatus"] = {"coding": [coding]}
    resource["category"] = [
        {"coding": [{"system": CATEGORY_SYSTEM, "code": PROBLEM_LIST_ITEM, "display": "Problem List Item"}]}
    ]
    concept = state.concepts.get(condition.get("coded") or "")
    if concept:
        resource["code"] = codeable_concept(concept, state)
    resource["subject"] = _patient_reference(state, condition["patient"])
    if condition.get("onsetDate"):
        resource["onsetDateTime"] = f"{condition['onsetDate'][:10]}T00:00:00+00:00"
    if condition.get("endDate"):
        resource["abatementDateTime"] = f"{condition['endDate'][:10]}T00:00:00+00:00"
    resource["recordedDate"] = _moment(condition["dateCreated"], "seconds")
    resource["recorder"] = {
        "reference": f"Practitioner/{USER_UUID}",
        "type": "Practitioner",
        "display": USER_PERSON["display"],
    }
    if condition.get("additionalDetail") is not None:
        resource["note"] = [{"text": condition["additionalDetail"]}]
    return resource


# --- FHIR -> stored ------------------------------------------------------------------------------


def check_resource_type(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Refused(400, "Failed to parse request body as JSON resource. Error was: not a JSON object")
    if body.get("resourceType") != "Condition":
        found = body.get("resourceType")
        raise Refused(400, f'Incorrect resource type found, expected "Condition" but found "{found}"')
    return body


def _codings(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    concept = body.get(name)
    if concept is None:
        return []
    codings = (concept.get("coding") or []) if isinstance(concept, dict) else None
    if not isinstance(codings, list) or not all(isinstance(c, dict) for c in codings):
        raise Refused(
            400, f"Failed to parse request body as JSON resource. Error was: {name} is not a CodeableConcept"
        )
    return codings


def _check_category(body: dict[str, Any]) -> None:
    """FhirUtils.getOpenmrsConditionType: no category is a problem-list item."""
    categories = body.get("category") or []
    if not isinstance(categories, list):
        raise Refused(400, "Failed to parse request body as JSON resource. Error was: category is not a list")
    codings = [c for category in categories for c in _codings({"category": category}, "category")]
    if not codings:
        return
    codes = [c.get("code") for c in codings if c.get("system") == CATEGORY_SYSTEM]
    kind = next((code for code in codes if code in (PROBLEM_LIST_ITEM, ENCOUNTER_DIAGNOSIS)), None)
    if kind is None:
        raise Refused(
            400, "Condition.category provided must be one of problem-list-item or encounter-diagnosis"
        )
    if kind == ENCOUNTER_DIAGNOSIS:
        # FHIR2 hands these to FhirDiagnosisService (an encounter diagnosis): not emulated.
        raise Refused(400, "Condition.category encounter-diagnosis: encounter diagnoses are not emulated")


def _status(body: dict[str, Any], name: str, system: str) -> str | None:
    """The code of the first coding in `system`. FHIR2 fails with a NullPointerException (500) on a
    coding without a system; the emulator refuses it (400), and a status in no coding of `system`."""
    codings = _codings(body, name)
    if not codings:
        return None
    if any(not c.get("system") for c in codings):
        raise Refused(400, f"{name}: every coding needs a system ({system})")
    code = next((c.get("code") for c in codings if c.get("system") == system), None)
    if code is None:
        raise Refused(400, f"{name}: no coding in the system {system}")
    return str(code).strip().lower()


def _patient(body: dict[str, Any], state: EmulatorState) -> str | None:
    """PatientReferenceTranslatorImpl: the uuid of a known patient, None when absent or unknown."""
    subject = body.get("subject")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(reference, str) or not reference:
        return None
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    kind = subject.get("type") or (parts[-2] if len(parts) > 1 else "")
    if kind != "Patient":
        raise Refused(400, f"Reference must be to an Patient not a {kind}")
    return parts[-1] if parts[-1] in state.patients else None


def _by_system(state: EmulatorState, system: str, code: str) -> str | None:
    source = state.fhir_concept_sources.get(system)
    if source is None:
        return None
    found: dict[str, str] = {}
    for concept in state.concepts_mapped_to(source, code):
        for mapping in concept["mappings"]:
            if mapping["source"].lower() == source.lower() and mapping["code"] == code:
                found[(mapping.get("mapType") or "SAME-AS").upper()] = concept["uuid"]
    return next(iter(found.values())) if len(found) == 1 else found.get("SAME-AS")


def _coded(body: dict[str, Any], state: EmulatorState, non_coded: str | None) -> str | None:
    """The concept the codings name (ConceptTranslatorImpl.toOpenmrsType)."""
    unknown: list[str] = []
    for coding in _codings(body, "code"):
        code = coding.get("code")
        if not isinstance(code, str) or not code:
            continue
        if not coding.get("system"):
            if code in state.concepts:
                return code
            unknown.append(code)
        elif found := _by_system(state, coding["system"], code):
            return found
    if unknown and non_coded is None:
        raise Refused(400, f"Condition.code: no concept with uuid {unknown[0]}")
    return None


def from_fhir(body: Any, state: EmulatorState) -> dict[str, Any]:
    """The stored fields a Condition body sets (ConditionTranslatorImpl.toOpenmrsType, then the
    validation of BaseFhirService.validateObject: 422). Its `id` is not among them."""
    body = check_resource_type(body)
    _check_category(body)
    patient = _patient(body, state)
    clinical = _status(body, "clinicalStatus", CLINICAL_SYSTEM)
    verification = _status(body, "verificationStatus", VERIFICATION_SYSTEM)
    non_coded = next(
        (
            e.get("valueString")
            for e in body.get("extension") or []
            if isinstance(e, dict)
            and e.get("url") == NON_CODED_EXTENSION
            and isinstance(e.get("valueString"), str)
        ),
        None,
    )
    fields: dict[str, Any] = {
        "patient": patient,
        "clinicalStatus": None if clinical is None else "ACTIVE" if clinical == "active" else "INACTIVE",
        "verificationStatus": VERIFICATION.get(verification or ""),
        "coded": _coded(body, state, non_coded),
        "nonCoded": non_coded,
    }
    if isinstance(body.get("note"), list) and body["note"]:
        first = body["note"][0]
        fields["additionalDetail"] = first.get("text") if isinstance(first, dict) else None
    onset, end = _date_of(body, "onset", "start"), _date_of(body, "abatement", "end")
    if onset is not None:
        fields["onsetDate"] = onset
    if end is not None:
        fields["endDate"] = end
    missing = [
        text
        for absent, text in (
            (patient is None, "subject: a known Patient is required"),
            (fields["coded"] is None and non_coded is None, "condition: The condition is required"),
            (clinical is None, "clinicalStatus: The clinical status is required"),
        )
        if absent
    ]
    if missing:
        raise Refused(422, f"'Condition' failed to validate with reason: {'; '.join(missing)}")
    return fields
