"""The way a user might load a TM2 export without the pipeline, as in a seed script (stage (e)).

`iterrows`, one pydantic model per row, one `update_one(upsert=True)` round trip per row. It is the
comparison point, not a recommendation: it has no quarantine, no accounting, no duplicate report,
and a key that is not the pipeline's.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ValidationError, field_validator
from pymongo.collection import Collection

from tm2_pipeline.codes import tm2_code_list

_CODES = tm2_code_list().codes
_SYSTEMS = {"ayurveda": "Ayurveda", "siddha": "Siddha", "unani": "Unani"}
_SEVERITIES = {
    "mild": "Mild",
    "moderate": "Moderate",
    "mod.": "Moderate",
    "2": "Moderate",
    "severe": "Severe",
}
_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%d-%b-%y")
_EXCEL_EPOCH = datetime.date(1899, 12, 30)


class NaiveDiagnosis(BaseModel):
    patient_id: str
    tm2_code: str
    condition_name: str = ""
    system_type: str
    severity: str | None = None
    diagnosis_date: datetime.date
    practitioner_id: str
    namaste_code: str | None = None

    @field_validator("patient_id", "practitioner_id")
    @classmethod
    def not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("empty")
        return value.upper()

    @field_validator("tm2_code")
    @classmethod
    def known_code(cls, value: str) -> str:
        value = value.strip().upper()
        if value not in _CODES:
            raise ValueError("unknown TM2 code")
        return value

    @field_validator("system_type")
    @classmethod
    def known_system(cls, value: str) -> str:
        return _SYSTEMS[value.strip().lower()]

    @field_validator("severity", "namaste_code", mode="before")
    @classmethod
    def empty_is_none(cls, value: str | None) -> str | None:
        return (value or "").strip() or None

    @field_validator("severity")
    @classmethod
    def known_severity(cls, value: str | None) -> str | None:
        return _SEVERITIES.get(value.lower(), value) if value else None

    @field_validator("diagnosis_date", mode="before")
    @classmethod
    def parse_date(cls, value: str) -> datetime.date:
        value = value.strip()
        if value.isdigit():
            return _EXCEL_EPOCH + datetime.timedelta(days=int(value))
        for pattern in _DATE_FORMATS:
            try:
                return datetime.datetime.strptime(value, pattern).date()
            except ValueError:
                continue
        raise ValueError("unreadable date")


def naive_seed(path: Path, collection: Collection) -> tuple[int, int]:
    """Load `path` row by row into `collection`; (rows upserted, rows skipped)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="skip")
    upserted = skipped = 0
    for _, row in frame.iterrows():
        try:
            record = NaiveDiagnosis(**row.to_dict())
        except (ValidationError, KeyError):
            skipped += 1
            continue
        document = record.model_dump(mode="json")
        key = "|".join(
            (
                document["patient_id"],
                document["tm2_code"],
                document["diagnosis_date"],
                document["system_type"],
            )
        )
        collection.update_one({"_id": key}, {"$set": document}, upsert=True)
        upserted += 1
    return upserted, skipped
