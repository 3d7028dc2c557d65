"""Fixed vectors for the identity recipe: a change here changes every stored _id and OpenMRS uuid."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tm2_pipeline.identity import (
    CONDITION_NAMESPACE,
    KEY_VERSION,
    _normalize_patient_id_in_full,
    clean_token,
    condition_uuid,
    normalize_patient_id,
    record_key,
    record_keys,
)

# (patient_id, tm2_code, diagnosis_date, system_type) -> (record key, condition uuid), computed once.
VECTORS = [
    (
        ("91-2868-4283-4708", "ST0V", "2025-07-08", "Ayurveda"),
        "57e08c257f2b27e1e2c58a92370fba6c573df842fcae4c410af115e37aef2167",
        "012bda40-da5c-53e7-bc6f-8d9bc175d202",
    ),
    (
        ("MRN-01011", "SR2Y", "2024-12-07", "Unani"),
        "9ea734682c28653bf2e88e1788cbc6edf897879f3a4f3cd759b083d285ccfd63",
        "d9d875d1-7b4c-564c-8a07-08be2d3503a2",
    ),
    (
        ("MRN-Ü1", "SK00", "2024-01-15", "Siddha"),  # non-ASCII stays raw UTF-8 (ensure_ascii=False)
        "6bff1e21953405e4249477b61aa3e04f4033bd9f6ac9f1af151864922eef022d",
        "c604bad7-6f60-55ec-8cba-3c2e4d264668",
    ),
]


def test_key_version_and_namespace_are_pinned() -> None:
    assert KEY_VERSION == 1
    assert str(CONDITION_NAMESPACE) == "b5c015c6-b758-5f1f-ba78-730461065650"


@pytest.mark.parametrize(("fields", "key", "condition"), VECTORS)
def test_record_key_and_condition_uuid_vectors(
    fields: tuple[str, str, str, str], key: str, condition: str
) -> None:
    assert record_key(*fields) == key
    assert condition_uuid(key) == condition


def test_record_key_is_sha256_of_the_compact_json_array() -> None:
    # The recipe spelled out by hand, independent of json.dumps.
    payload = '[1,"MRN-Ü1","SK00","2024-01-15","Siddha"]'.encode()
    assert record_key("MRN-Ü1", "SK00", "2024-01-15", "Siddha") == hashlib.sha256(payload).hexdigest()
    key = VECTORS[0][1]
    assert condition_uuid(key) == str(
        uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "urn:tm2-pipeline:openmrs-condition"), key)
    )


def test_record_key_separates_every_field() -> None:
    base = ("MRN-1", "SK00", "2024-01-15", "Ayurveda")
    keys = {record_key(*base)}
    for i, other in enumerate(("MRN-2", "SK01", "2024-01-16", "Unani")):
        changed = list(base)
        changed[i] = other
        keys.add(record_key(*changed))
    assert len(keys) == 5
    # JSON quoting keeps field boundaries: no concatenation collision.
    assert record_key("A", "B,C", "2024-01-15", "Unani") != record_key("A,B", "C", "2024-01-15", "Unani")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("91322937717516", "91-3229-3771-7516"),
        ("91 2868 4283 4708", "91-2868-4283-4708"),
        ("91-2868-4283-4708", "91-2868-4283-4708"),
        ("９１２８６８４２８３４７０８", "91-2868-4283-4708"),  # full-width digits (NFKC)
        ("mrn-01001 ", "MRN-01001"),
        ("ｍｒｎ\u00a0\u00a00001", "MRN 0001"),
        ("\u200bMRN-7\ufeff", "MRN-7"),
        ("9132293771751", "9132293771751"),  # 13 digits: not an ABHA number, left alone
        ("mrn-é1", "MRN-é1"),  # only ASCII letters are upper-cased
    ],
)
def test_normalize_patient_id_vectors(raw: str, expected: str) -> None:
    assert normalize_patient_id(raw) == expected


def test_clean_token_vector() -> None:
    assert clean_token("\u200b a\u00a0\u00a0b\t\nc \ufeff") == "a b c"


# --- the fast paths must give the very same bytes -----------------------------------------------

# Text biased towards what matters to JSON escaping: quotes, backslashes, control characters,
# U+2028/U+2029 (json.dumps keeps them raw with ensure_ascii=False), DEL, non-ASCII.
_TRICKY = st.sampled_from(['"', "\\", "\x00", "\x1f", "\n", "\t", "\u2028", "\u2029", "\x7f", "é", "€", "-"])
_FIELD = st.one_of(st.text(max_size=12), st.lists(st.one_of(_TRICKY, st.text(max_size=3))).map("".join))


@given(st.lists(st.tuples(_FIELD, _FIELD, _FIELD, _FIELD), max_size=6))
def test_record_keys_are_byte_identical_to_record_key(rows: list[tuple[str, str, str, str]]) -> None:
    columns = [[row[i] for row in rows] for i in range(4)]
    assert record_keys(*columns) == [record_key(*row) for row in rows]


@given(st.lists(st.tuples(*[st.from_regex(r"[A-Za-z0-9 .@/-]{0,20}", fullmatch=True)] * 4), max_size=6))
def test_record_keys_of_plain_columns_take_the_fast_path_and_match(rows: list[tuple[str, ...]]) -> None:
    columns = [[row[i] for row in rows] for i in range(4)]
    assert record_keys(*columns) == [record_key(*row) for row in rows]


def test_record_keys_vectors_and_escaped_rows() -> None:
    fields = [vector[0] for vector in VECTORS]
    assert record_keys(*zip(*fields, strict=True)) == [vector[1] for vector in VECTORS]
    rows = [("MRN-1", "SK00", "2024-01-15", "Unani"), ('MR"N\\2', "SK00", "2024-01-15", "Uná\n")]
    assert record_keys(*zip(*rows, strict=True)) == [record_key(*row) for row in rows]
    # A lone surrogate cannot be UTF-8 encoded: both refuse it the same way.
    with pytest.raises(UnicodeEncodeError):
        record_key("\ud800", "SK00", "2024-01-15", "Unani")
    with pytest.raises(UnicodeEncodeError):
        record_keys(["\ud800"], ["SK00"], ["2024-01-15"], ["Unani"])


@given(
    st.one_of(
        st.text(),
        st.from_regex(r"[ -~]{0,20}", fullmatch=True),
        st.from_regex(r"[0-9 -]{10,20}", fullmatch=True),
    )
)
def test_normalize_patient_id_shortcut_matches_the_full_recipe(value: str) -> None:
    assert normalize_patient_id(value) == _normalize_patient_id_in_full(value)
