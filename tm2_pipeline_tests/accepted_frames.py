"""Synthetic accepted-record frames in the validation contract's shape, for the store's tests."""

from __future__ import annotations

import hashlib
import json

import pandas as pd

from tm2_pipeline.identity import record_key

SYSTEMS = ("Ayurveda", "Siddha", "Unani")
CODES = ("SK41", "SP60", "SR11", "SM24")


def content_hash(severity, practitioner_id, condition_name, namaste_code) -> str:
    """Stands in for the validation helper's hash: any stable function of the non-key fields will do."""
    payload = json.dumps([severity, practitioner_id, condition_name, namaste_code], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def accepted_frame(count: int, *, first: int = 0) -> pd.DataFrame:
    """`count` distinct records; record i is the same diagnosis in every frame built here."""
    rows = []
    for i in range(first, first + count):
        patient, code, date, system = (
            f"P{i:07d}",
            CODES[i % 4],
            f"2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}",
            SYSTEMS[i % 3],
        )
        severity = ("mild", "moderate", None)[i % 3]
        practitioner, condition, namaste = (
            f"DR{i % 50:03d}",
            f"Condition {i}",
            (f"NAM-{i}" if i % 2 else None),
        )
        rows.append({
            "record_key": record_key(patient, code, date, system),
            "patient_id": patient, "tm2_code": code, "diagnosis_date": date, "system_type": system,
            "severity": severity, "practitioner_id": practitioner, "condition_name": condition,
            "namaste_code": namaste, "who_title": f"Title of {code}", "who_block": "Block",
            "icd_release": "2025-01",
            "content_hash": content_hash(severity, practitioner, condition, namaste),
            "source_row": i + 2,
        })  # fmt: skip
    return pd.DataFrame(rows)


def with_severity(frame: pd.DataFrame, position: int, severity: str) -> pd.DataFrame:
    """A copy of `frame` where one record's severity (and so its content hash) changed."""
    changed = frame.copy()
    changed.loc[position, "severity"] = severity
    row = changed.loc[position]
    changed.loc[position, "content_hash"] = content_hash(
        severity, row["practitioner_id"], row["condition_name"], row["namaste_code"]
    )
    return changed
