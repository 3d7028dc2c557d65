"""Valid normalized rows -> the records the store keeps: WHO reference, record key, content hash, dedup.

Contract with the store (and the OpenMRS side), pinned by tests:

- `record_key` = `identity.record_key(patient_id, tm2_code, diagnosis_date, system_type)`: what makes
  two rows the same diagnosis.
- `content_hash` = hex sha256 of the UTF-8 bytes of the compact JSON array
  `[severity, practitioner_id, condition_name, namaste_code]` (None -> null), written by
  `json.dumps(..., separators=(",", ":"), ensure_ascii=False)`; `condition_name` is the stored one
  (the WHO title when the file left it empty). Same key, different hash = the diagnosis was edited.
- Within one file, the first row of a record key wins; later rows with that key are duplicates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import numpy as np
import pandas as pd

from tm2_pipeline.codes import ICD_RELEASE, tm2_code_list
from tm2_pipeline.identity import plain_json_strings, record_keys

ACCEPTED_RECORD_COLUMNS = (
    "record_key",
    "patient_id",
    "tm2_code",
    "diagnosis_date",
    "system_type",
    "severity",
    "practitioner_id",
    "condition_name",
    "namaste_code",
    "who_title",
    "who_block",
    "icd_release",
    "content_hash",
    "source_row",
)


def content_hash(
    severity: str | None, practitioner_id: str, condition_name: str, namaste_code: str | None
) -> str:
    """Hex sha256 of the compact JSON array [severity, practitioner_id, condition_name, namaste_code]."""
    payload = json.dumps(
        [severity, practitioner_id, condition_name, namaste_code], separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def who_reference(codes: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(WHO title, WHO block title) for each TM2 code; every code must be in the shipped list."""
    code_list = tm2_code_list()
    positions, uniques = pd.factorize(codes, use_na_sentinel=False)
    entries = [code_list.get(code) for code in uniques]
    titles = np.array([entry.title if entry else None for entry in entries], dtype=object)
    blocks = np.array([entry.block_title if entry else None for entry in entries], dtype=object)
    return (
        pd.Series(titles[positions], index=codes.index, dtype=object),
        pd.Series(blocks[positions], index=codes.index, dtype=object),
    )


def build_accepted_records(valid: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, int]], pd.Series]:
    """Records of valid rows (normalized columns + `source_row`), first of each key kept.

    Returns (records with exactly `ACCEPTED_RECORD_COLUMNS`, duplicate rows as
    {"row", "duplicate_of_row"}, and a bool Series over the records' index: condition_name was
    empty and was filled with the WHO title).
    """
    titles, blocks = who_reference(valid["tm2_code"])
    names_empty = valid["condition_name"].eq("")
    condition_names = valid["condition_name"].where(~names_empty, titles)
    keys = record_keys(valid["patient_id"], valid["tm2_code"], valid["diagnosis_date"], valid["system_type"])
    hashes = content_hashes(
        valid["severity"], valid["practitioner_id"], condition_names, valid["namaste_code"]
    )
    records = pd.DataFrame(
        {
            "record_key": pd.Series(keys, index=valid.index, dtype=object),
            "patient_id": valid["patient_id"],
            "tm2_code": valid["tm2_code"],
            "diagnosis_date": valid["diagnosis_date"],
            "system_type": valid["system_type"],
            "severity": valid["severity"],
            "practitioner_id": valid["practitioner_id"],
            "condition_name": condition_names,
            "namaste_code": valid["namaste_code"],
            "who_title": titles,
            "who_block": blocks,
            "icd_release": pd.Series([ICD_RELEASE] * len(valid), index=valid.index, dtype=object),
            "content_hash": pd.Series(hashes, index=valid.index, dtype=object),
            "source_row": valid["source_row"].astype("int64"),
        },
        index=valid.index,
    )
    if not records["source_row"].is_monotonic_increasing:
        records = records.sort_values("source_row", kind="stable")
    is_duplicate = records["record_key"].duplicated(keep="first")
    duplicates: list[dict[str, int]] = []
    if is_duplicate.any():
        first_row = records.groupby("record_key", sort=False)["source_row"].transform("first")
        duplicates = [
            {"row": int(row), "duplicate_of_row": int(first)}
            for row, first in zip(
                records.loc[is_duplicate, "source_row"], first_row[is_duplicate], strict=True
            )
        ]
        records = records.loc[~is_duplicate]
    filled = names_empty.loc[records.index]
    return records.reset_index(drop=True), duplicates, filled.reset_index(drop=True)


def content_hashes(
    severities: Iterable[str | None],
    practitioners: Iterable[str],
    names: Iterable[str],
    namaste_codes: Iterable[str | None],
) -> list[str]:
    """`content_hash` of each row, byte for byte, for whole columns.

    Each column's distinct values are written as JSON once, and each distinct payload is hashed once.
    """
    columns = [list(column) for column in (severities, practitioners, names, namaste_codes)]
    sha256 = hashlib.sha256
    cache: dict[str, str] = {}
    hashes: list[str] = []
    for payload in map("[{},{},{},{}]".format, *map(_json_values, columns)):
        digest = cache.get(payload)
        if digest is None:
            digest = cache[payload] = sha256(payload.encode()).hexdigest()
        hashes.append(digest)
    return hashes


def _json_values(column: list[object]) -> list[str]:
    """Each value as `content_hash` writes it inside its array (compact JSON, raw UTF-8).

    A JSON array's items are written exactly as each item alone; most need no escaping at all.
    """
    written: dict[str | None, str] = {}
    for value in dict.fromkeys(column):
        if type(value) is str and plain_json_strings((value,)):
            written[value] = f'"{value}"'
        elif value is None or type(value) is str:
            written[value] = json.dumps(value, ensure_ascii=False)
        else:  # numbers would share dict slots (1 == 1.0 == True) yet are written differently
            return [json.dumps(item, separators=(",", ":"), ensure_ascii=False) for item in column]
    return list(map(written.__getitem__, column))
