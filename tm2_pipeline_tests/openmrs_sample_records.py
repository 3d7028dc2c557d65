"""Stored-record dicts (the shape `tm2_records` holds) built from data/tm2_sample.csv, for OpenMRS tests.

Deliberately simple normalization (only what the sample needs); rows the pipeline would reject
(unknown or TM1 code, unreadable or future date) are left out.
"""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import date, datetime
from typing import Any

from tm2_pipeline.codes import DATA_DIR, ICD_RELEASE, tm2_code_list
from tm2_pipeline.identity import clean_token, condition_uuid, normalize_patient_id, record_key

SAMPLE = DATA_DIR / "tm2_sample.csv"
_DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y", "%d-%m-%Y", "%d-%b-%y")
_SEVERITY = {
    "mild": "Mild",
    "1": "Mild",
    "moderate": "Moderate",
    "mod.": "Moderate",
    "2": "Moderate",
    "severe": "Severe",
    "sev": "Severe",
    "3": "Severe",
}
CONTENT_FIELDS = (
    "patient_id",
    "tm2_code",
    "diagnosis_date",
    "system_type",
    "severity",
    "practitioner_id",
    "condition_name",
    "namaste_code",
)


def _date(text: str) -> str | None:
    for pattern in _DATE_FORMATS:
        try:
            parsed = datetime.strptime(text.strip(), pattern).date()
        except ValueError:
            continue
        return parsed.isoformat() if parsed <= date(2026, 1, 1) else None
    return None


def content_hash(record: dict[str, Any]) -> str:
    payload = json.dumps([record.get(name) for name in CONTENT_FIELDS], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def make_record(
    patient_id: str,
    tm2_code: str,
    diagnosis_date: str,
    system_type: str = "Ayurveda",
    severity: str | None = "Mild",
    **extra: Any,
) -> dict[str, Any]:
    entry = tm2_code_list().get(tm2_code)
    key = record_key(patient_id, tm2_code, diagnosis_date, system_type)
    record = {
        "_id": key,
        "patient_id": patient_id,
        "tm2_code": tm2_code,
        "diagnosis_date": diagnosis_date,
        "system_type": system_type,
        "severity": severity,
        "practitioner_id": "HPR-71-2231-0098",
        "condition_name": entry.title if entry else "",
        "namaste_code": None,
        "who_title": entry.title if entry else "",
        "who_block": entry.block_title if entry else "",
        "icd_release": ICD_RELEASE,
    }
    record.update(extra)
    record["content_hash"] = content_hash(record)
    return record


def with_changes(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The same record key with other content (e.g. a corrected severity)."""
    changed = {**record, **changes}
    changed["content_hash"] = content_hash(changed)
    return changed


def sample_records() -> list[dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    with SAMPLE.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            code = clean_token(row["tm2_code"]).upper()
            diagnosis_date = _date(row["diagnosis_date"])
            if code not in tm2_code_list() or diagnosis_date is None:
                continue
            record = make_record(
                normalize_patient_id(row["patient_id"]),
                code,
                diagnosis_date,
                system_type=clean_token(row["system_type"]).title(),
                severity=_SEVERITY.get(clean_token(row["severity"]).lower()),
                practitioner_id=clean_token(row["practitioner_id"]),
                condition_name=clean_token(row["condition_name"]),
                namaste_code=clean_token(row["namaste_code"]) or None,
            )
            records[record["_id"]] = record
    return list(records.values())


__all__ = ["condition_uuid", "make_record", "sample_records", "with_changes"]
