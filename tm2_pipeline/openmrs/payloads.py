"""A stored TM2 record -> the OpenMRS REST Condition body, and the test "does OpenMRS already hold it".

Pure: no I/O. The patient identifier never goes into the body (only the patient's OpenMRS uuid does).
A condition is created active and confirmed; from then on both statuses are the clinicians' (an export
carries none): a correction leaves them as OpenMRS holds them, and a condition whose statuses were
changed in OpenMRS still holds the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Set on create only (see the module's doc).
CLINICAL_STATUS = "ACTIVE"
VERIFICATION_STATUS = "CONFIRMED"
NOT_RECORDED = "not recorded"


def noncoded_text(record: Mapping[str, Any]) -> str:
    """Free text used when no concept maps the code: "<code> <WHO title>" (WHO's title, unmodified)."""
    title = record.get("who_title") or ""
    return f"{record['tm2_code']} {title}".strip()


def code_label(record: Mapping[str, Any]) -> str:
    """The detail's first part without the release: "ICD-11 TM2 SK01"."""
    return f"ICD-11 TM2 {record['tm2_code']}"


def system_label(record: Mapping[str, Any]) -> str:
    """The detail's second part: "System: Ayurveda"."""
    return f"System: {record.get('system_type') or NOT_RECORDED}"


def additional_detail(record: Mapping[str, Any]) -> str:
    """Human-readable context a clinician sees under the condition, e.g.
    "ICD-11 TM2 SK01 (2025-01); System: Ayurveda; Severity: Mild; Practitioner: HPR-71-2231-0098;
    NAMASTE: VA-4". Never the patient identifier.
    """
    release = record.get("icd_release")
    code = code_label(record) + (f" ({release})" if release else "")
    parts = [
        code,
        system_label(record),
        f"Severity: {record.get('severity') or NOT_RECORDED}",
        f"Practitioner: {record.get('practitioner_id') or NOT_RECORDED}",
    ]
    if record.get("namaste_code"):
        parts.append(f"NAMASTE: {record['namaste_code']}")
    return "; ".join(parts)


def condition_payload(
    record: Mapping[str, Any], *, condition_uuid: str, patient_uuid: str, concept_uuid: str | None
) -> dict[str, Any]:
    """The body of `POST /condition` (create, with our uuid) for one record.

    `concept_uuid` None means: no concept maps the code, record it as non-coded text.
    """
    condition = {"coded": concept_uuid} if concept_uuid else {"nonCoded": noncoded_text(record)}
    return {
        "uuid": condition_uuid,
        "patient": patient_uuid,
        "condition": condition,
        "clinicalStatus": CLINICAL_STATUS,
        "verificationStatus": VERIFICATION_STATUS,
        "onsetDate": record["diagnosis_date"],
        "additionalDetail": additional_detail(record),
    }


# What a correction leaves out, so that OpenMRS keeps it from the version being replaced.
_KEPT_BY_A_CORRECTION = ("uuid", "patient", "clinicalStatus", "verificationStatus")


def correction_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The body of `POST /condition/{uuid}` (a new version): the record's content. The uuid, the patient
    and both statuses are left out: OpenMRS keeps them from the version being replaced, so a problem a
    clinician marked inactive or resolved stays so."""
    return {name: value for name, value in payload.items() if name not in _KEPT_BY_A_CORRECTION}


def _uuid_of(value: Any) -> str | None:
    """A reference in a representation is either a uuid string or an object with a `uuid`."""
    if isinstance(value, Mapping):
        return value.get("uuid")
    return value


def condition_matches(existing: Mapping[str, Any], payload: Mapping[str, Any]) -> bool:
    """True when a condition OpenMRS returned already says what the record says: the condition (coded
    concept or text), the onset date (its date part) and additionalDetail. Not the statuses, which are
    the clinicians' once the condition exists."""
    have = existing.get("condition") or {}
    want = payload["condition"]
    if "coded" in want:
        if _uuid_of(have.get("coded")) != want["coded"]:
            return False
    elif _uuid_of(have.get("coded")) is not None or have.get("nonCoded") != want["nonCoded"]:
        return False
    same_day = (existing.get("onsetDate") or "")[:10] == payload["onsetDate"]
    return same_day and (existing.get("additionalDetail") or None) == (payload["additionalDetail"] or None)


def previous_version_of(condition: Mapping[str, Any]) -> str | None:
    """The uuid this condition replaced (`previousVersion` is a reference, a uuid or absent)."""
    return _uuid_of(condition.get("previousVersion"))
