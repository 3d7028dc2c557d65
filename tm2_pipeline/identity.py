"""The fixed identity recipe: how a patient id is written, the record key, the OpenMRS condition uuid.

Changing anything here changes every stored `_id` and every condition uuid in OpenMRS, so the
recipe is versioned (`KEY_VERSION`) and pinned by fixed test vectors.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import uuid

KEY_VERSION = 1

# Characters that survive NFKC but carry nothing: zero-width space/joiners, word joiner, BOM.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_WHITESPACE_RUN = re.compile(r"\s+")
_ABHA_SEPARATORS = re.compile(r"[\s-]")
_ASCII_LOWER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")

CONDITION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:tm2-pipeline:openmrs-condition")


def clean_token(value: str) -> str:
    """NFKC, invisible characters removed, trimmed, inner whitespace collapsed to one space."""
    text = unicodedata.normalize("NFKC", value).translate(_INVISIBLE)
    return _WHITESPACE_RUN.sub(" ", text).strip()


def normalize_patient_id(value: str) -> str:
    """Canonical patient id: `clean_token`, ASCII letters upper-cased, ABHA numbers as XX-XXXX-XXXX-XXXX."""
    text = clean_token(value).translate(_ASCII_LOWER)
    digits = _ABHA_SEPARATORS.sub("", text)
    if len(digits) == 14 and digits.isascii() and digits.isdigit():
        return f"{digits[:2]}-{digits[2:6]}-{digits[6:10]}-{digits[10:]}"
    return text


def record_key(patient_id: str, tm2_code: str, diagnosis_date: str, system_type: str) -> str:
    """Hex sha256 of the compact JSON array [1, patient_id, tm2_code, yyyy-mm-dd, system_type].

    Arguments must already be normalized; the key is what makes a row the same diagnosis.
    """
    payload = json.dumps(
        [KEY_VERSION, patient_id, tm2_code, diagnosis_date, system_type],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def condition_uuid(key: str) -> str:
    """The OpenMRS condition uuid a record is created with: uuid5 of its record key."""
    return str(uuid.uuid5(CONDITION_NAMESPACE, key))
