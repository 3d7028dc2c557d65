"""The ICD-11 TM2 2025-01 reference list and the NAMASTE crosswalk, loaded once from `data/`.

Titles are WHO's, reproduced unmodified (CC BY-ND 3.0 IGO): never normalize them.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
ICD_RELEASE = "2025-01"
TM2_LIST_PATH = DATA_DIR / "icd11_tm2_2025-01.csv"
CROSSWALK_PATH = DATA_DIR / "namaste_tm2_crosswalk.csv"

TM2_CODE_SHAPE = re.compile(r"^S[K-NP-T][0-9][0-9A-HJ-NP-Z]$")
TM1_CODE_SHAPE = re.compile(r"^S[A-HJ][0-9][0-9A-HJ-NP-Z]$")
_CODE_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
# Any ICD-11 MMS stem code (with an optional subcategory) or extension code.
ICD11_CODE_SHAPE = re.compile(
    r"^(?:[1-9A-HJ-NP-SV][A-HJ-NP-Z][0-9][0-9A-HJ-NP-Z](?:\.[0-9A-HJ-NP-Z]{1,2})?|X[A-HJ-NP-Z][0-9A-HJ-NP-Z]{2,4})$"
)
_NOT_CODE_CHARACTERS = re.compile(r"[^0-9A-Z.]")


@dataclass(frozen=True, slots=True)
class TM2Code:
    code: str
    title: str
    block_title: str
    is_residual: bool


class TM2CodeList:
    """Membership, titles and blocks of the shipped TM2 codes, with did-you-mean suggestions."""

    def __init__(self, codes: dict[str, TM2Code]) -> None:
        self._codes = codes

    @classmethod
    def from_csv(cls, path: Path = TM2_LIST_PATH) -> TM2CodeList:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = csv.DictReader(handle)
            codes = {
                row["code"]: TM2Code(
                    code=row["code"],
                    title=row["title"],
                    block_title=row["block_title"],
                    is_residual=row["is_residual"] == "true",
                )
                for row in rows
            }
        return cls(codes)

    def __contains__(self, code: object) -> bool:
        return code in self._codes

    def __len__(self) -> int:
        return len(self._codes)

    def get(self, code: str) -> TM2Code | None:
        return self._codes.get(code)

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(self._codes)

    def suggest(self, code: str) -> list[str]:
        """Real codes one edit (substitution, insertion, deletion, adjacent swap) away, sorted."""
        candidates: set[str] = set()
        for i in range(len(code) + 1):
            for letter in _CODE_ALPHABET:
                candidates.add(code[:i] + letter + code[i:])
                if i < len(code):
                    candidates.add(code[:i] + letter + code[i + 1 :])
            if i < len(code):
                candidates.add(code[:i] + code[i + 1 :])
            if i < len(code) - 1:
                candidates.add(code[:i] + code[i + 1] + code[i] + code[i + 2 :])
        candidates.discard(code)
        return sorted(candidates & self._codes.keys())


def is_code_shaped(value: str) -> bool:
    """Whether a (canonical, upper-cased) tm2_code cell looks like an ICD-11 code, stray junk
    characters aside ("SR5Z€"): only such values are echoed in messages and reports. Anything else in
    the code column (an MRN from a swapped column, free text) may be PHI."""
    return len(value) <= 8 and ICD11_CODE_SHAPE.match(_NOT_CODE_CHARACTERS.sub("", value)) is not None


def is_tm1_code(code: str) -> bool:
    """ICD-11 chapter 26 Module I (East Asian medicine): valid ICD-11, but not TM2."""
    return bool(TM1_CODE_SHAPE.match(code))


class NamasteCrosswalk:
    """NAMASTE Ayurveda code -> the TM2 codes the official list pairs it with."""

    def __init__(self, pairs: dict[str, frozenset[str]]) -> None:
        self._pairs = pairs

    @classmethod
    def from_csv(cls, path: Path = CROSSWALK_PATH) -> NamasteCrosswalk:
        pairs: dict[str, set[str]] = defaultdict(set)
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                pairs[row["namaste_code"]].add(row["tm2_code"])
        return cls({code: frozenset(tm2) for code, tm2 in pairs.items()})

    def tm2_codes_for(self, namaste_code: str) -> frozenset[str] | None:
        """The TM2 codes paired with this Ayurveda NAMASTE code, or None when the code is not listed."""
        return self._pairs.get(namaste_code)


@cache
def tm2_code_list() -> TM2CodeList:
    return TM2CodeList.from_csv()


@cache
def namaste_crosswalk() -> NamasteCrosswalk:
    return NamasteCrosswalk.from_csv()
