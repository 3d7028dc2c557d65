"""records.py: WHO reference, record key, content hash (a contract with the store), duplicates."""

from __future__ import annotations

import hashlib

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from tm2_pipeline.identity import record_key
from tm2_pipeline.records import (
    ACCEPTED_RECORD_COLUMNS,
    build_accepted_records,
    content_hash,
    content_hashes,
    who_reference,
)


def valid_rows(*rows: dict[str, object]) -> pd.DataFrame:
    base = {
        "patient_id": "MRN-1",
        "tm2_code": "SK00",
        "condition_name": "Headache",
        "system_type": "Ayurveda",
        "severity": "Mild",
        "diagnosis_date": "2024-01-15",
        "practitioner_id": "HPR-1",
        "namaste_code": None,
    }
    frame = pd.DataFrame([{**base, **row} for row in rows], dtype=object)
    frame["source_row"] = range(1, len(rows) + 1)
    return frame


def test_content_hash_fixed_vectors() -> None:
    assert (
        content_hash("Mild", "HPR-71-2231-0098", "वातव्याधि", None)
        == "9727058e8e41b5206bb5927adcc19becf3b88d86830b4b956c969e70ff45a596"
    )
    assert (
        content_hash(None, "dr.meera@hpr.abdm", 'Joint pain, with "swelling"', "VA-4")
        == "38800a9a0544fb878be0760fe146d656754be5b2067534f024322eb18f285d91"
    )


def test_content_hash_recipe_spelled_out() -> None:
    payload = b'[null,"dr.meera@hpr.abdm","Joint pain, with \\"swelling\\"","VA-4"]'
    assert content_hash(None, "dr.meera@hpr.abdm", 'Joint pain, with "swelling"', "VA-4") == (
        hashlib.sha256(payload).hexdigest()
    )
    raw_utf8 = '["Mild","HPR-71-2231-0098","वातव्याधि",null]'.encode()  # not \\u escapes
    assert content_hash("Mild", "HPR-71-2231-0098", "वातव्याधि", None) == hashlib.sha256(raw_utf8).hexdigest()


def test_who_reference_titles_are_verbatim() -> None:
    titles, blocks = who_reference(pd.Series(["SM1L", "SR02", "SK00"], index=[4, 5, 6]))
    assert titles.tolist() == [
        "Itchy swollen lip diorder (TM2)",
        "Infantile dysentry disorder (TM2)",
        "Cephalalgia disorder (TM2)",
    ]
    assert blocks.tolist()[2] == "Headache disorders (TM2)"
    assert list(titles.index) == [4, 5, 6]


def test_records_have_the_contract_columns_keys_hashes_and_who_fields() -> None:
    records, duplicates, filled = build_accepted_records(
        valid_rows({}, {"patient_id": "MRN-2", "condition_name": ""})
    )
    assert tuple(records.columns) == ACCEPTED_RECORD_COLUMNS
    assert duplicates == []
    assert filled.tolist() == [False, True]
    first, second = records.to_dict("records")
    assert first["record_key"] == record_key("MRN-1", "SK00", "2024-01-15", "Ayurveda")
    assert first["content_hash"] == content_hash("Mild", "HPR-1", "Headache", None)
    assert (first["who_title"], first["who_block"], first["icd_release"]) == (
        "Cephalalgia disorder (TM2)",
        "Headache disorders (TM2)",
        "2025-01",
    )
    # An empty condition_name is stored as the WHO title, and hashed as stored.
    assert second["condition_name"] == "Cephalalgia disorder (TM2)"
    assert second["content_hash"] == content_hash("Mild", "HPR-1", "Cephalalgia disorder (TM2)", None)
    assert [first["source_row"], second["source_row"]] == [1, 2]


def test_first_row_of_a_key_wins_even_when_content_differs() -> None:
    rows = valid_rows(
        {},
        {"patient_id": "MRN-2"},
        {"severity": "Severe", "condition_name": ""},  # same key as row 1, edited content
        {"patient_id": "MRN-2"},
        {"system_type": "Unani"},  # a different key: system is part of it
    )
    records, duplicates, filled = build_accepted_records(rows)
    assert records["source_row"].tolist() == [1, 2, 5]
    assert records.loc[0, "severity"] == "Mild"
    assert duplicates == [{"row": 3, "duplicate_of_row": 1}, {"row": 4, "duplicate_of_row": 2}]
    assert filled.tolist() == [False, False, False]


def test_no_valid_rows() -> None:
    records, duplicates, filled = build_accepted_records(valid_rows({}).iloc[0:0])
    assert tuple(records.columns) == ACCEPTED_RECORD_COLUMNS
    assert len(records) == 0 and duplicates == [] and len(filled) == 0


_TEXT = st.one_of(
    st.text(max_size=10),
    st.lists(st.sampled_from(['"', "\\", "\x00", "\x1f", "\u2028", "é", "a", "-"]), max_size=5).map("".join),
)


@given(st.lists(st.tuples(st.none() | _TEXT, _TEXT, _TEXT, st.none() | _TEXT), max_size=8))
def test_content_hashes_are_byte_identical_to_content_hash(rows: list[tuple]) -> None:
    rows = rows + rows[:2]  # repeated content comes from the cache
    columns = [[row[i] for row in rows] for i in range(4)]
    assert content_hashes(*columns) == [content_hash(*row) for row in rows]


def test_content_hashes_fall_back_for_values_json_writes_otherwise() -> None:
    rows = [(float("nan"), "HPR-1", "Headache", None), ("Mild", "HPR-1", 'a "quoted" name', None)]
    columns = [[row[i] for row in rows] for i in range(4)]
    assert content_hashes(*columns) == [content_hash(*row) for row in rows]
