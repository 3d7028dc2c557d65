"""Raw text as read -> the canonical value the store keeps; and the message for each failed check.

Normalizers transform, the pandera rules in `schema.py` decide. A value with no canonical form keeps
its cleaned text ("ss53 " -> "SS53", "MODERATE" -> "Moderate", "Homeopathy" stays "Homeopathy") so
the rule rejects it under the right check name. Conventions per column:

- every column: "" means the cell was empty (the `missing` rule), except `severity` and
  `namaste_code` (optional: None when empty);
- diagnosis_date: ISO yyyy-mm-dd when the text is a real calendar date, None when it cannot be
  read as one (`bad_date`); bounds (`future_date`, `too_old`) are rules, not parsing.

Dates read: yyyy-mm-dd; dd/mm/yyyy, dd-mm-yyyy, dd.mm.yyyy, also with two-digit years
(month-first when `day_first` is False, never guessed by swapping); dd-Mon-yy and dd-Mon-yyyy;
each with an optional midnight time ("00:00:00"); and Excel day numbers of five digits (10000 =
1927-05-18 up: a four-digit number is more likely a bare year than a serial). Two-digit years are
read as `strptime`'s `%y` reads them: 00-68 are 20yy, 69-99 are 19yy. The pivot is fixed, never
today's year: the same text must give the same date (and record key) whatever day the file is read
again, and "05/01/27" typed in 2026 is then a future date, rejected, not 1927 accepted.

`normalize_tm2_frame` runs each normalizer once per distinct value (`pd.factorize`, then the
results spread back by position): codes, dates, systems and severities repeat a lot. `explain`
writes messages; it never echoes patient or practitioner identifiers, and echoes other values
only in their canonical, short form (codes, ISO dates, short system/severity words).
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd

from tm2_pipeline.codes import ICD_RELEASE, is_code_shaped, namaste_crosswalk, tm2_code_list
from tm2_pipeline.identity import clean_token, normalize_patient_id

CHECKS = (
    "missing",
    "ragged_row",
    "unknown_code",
    "tm1_code",
    "bad_date",
    "future_date",
    "too_old",
    "bad_system",
    "bad_severity",
    "excel_mangled_id",
    "too_long",
    "control_chars",
    "namaste_mismatch",
)
SYSTEM_TYPES = ("Ayurveda", "Siddha", "Unani")
SEVERITIES = ("Mild", "Moderate", "Severe")
OLDEST_DATE = datetime.date(1900, 1, 1)
TWO_DIGIT_YEAR_PIVOT = 69  # as POSIX and Python's strptime: "68" is 2068, "69" is 1969
MAX_IDENTIFIER_LENGTH = 64
# A name longer than this is not a name (rows swallowed by a stray quote, a pasted note); it is also
# where a quarantined value is cut, so the reject still shows where the name went wrong.
MAX_CONDITION_NAME_LENGTH = 4096

_SEVERITY_SPELLINGS = {
    "Mild": ("mild", "mld", "mil", "1", "1.0", "हल्का", "हल्की", "मामूली"),
    "Moderate": ("moderate", "mod", "modr", "modt", "mdt", "2", "2.0", "मध्यम"),
    "Severe": ("severe", "sev", "sevr", "svr", "3", "3.0", "गंभीर"),
}
_SEVERITY_BY_WORD = {
    clean_token(word).casefold(): canonical
    for canonical, words in _SEVERITY_SPELLINGS.items()
    for word in words
}
_SYSTEM_BY_WORD = {system.casefold(): system for system in SYSTEM_TYPES}
_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}
_MIDNIGHT = re.compile(r"[ T]00:00(?::00(?:\.0+)?)?$")
_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_NUMERIC_DATE = re.compile(r"(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})")
_MONTH_NAME_DATE = re.compile(r"(\d{1,2})([- /])([A-Za-z]{3,9})\.?\2(\d{4}|\d{2})")
_EXCEL_SERIAL = re.compile(r"(\d{5})(?:\.0+)?")
_EXCEL_EPOCH = datetime.date(1899, 12, 30)  # serial 61 and up; Excel counts a fictitious 1900-02-29
_DATE_FORMATS = "yyyy-mm-dd, {numeric}, dd-Mon-yy, dd-Mon-yyyy or an Excel day number"
_ECHO_LIMIT = 20
# Words of letters (or a lone digit: a severity out of range) may be quoted back in a reason.
_ECHO_WORDS = re.compile(r"[^\W\d_]+(?:[ ./-][^\W\d_]+)*|\d")


# --- single values ------------------------------------------------------------------------------


def normalize_tm2_code(raw: str) -> str:
    """'ss53\\u00a0' -> 'SS53': clean_token, upper-cased. Membership is a rule, not done here."""
    return clean_token(raw).upper()


def normalize_identifier(raw: str) -> str:
    """Practitioner ids (HPR numbers, name@hpr.abdm, council numbers): clean_token, case kept."""
    return clean_token(raw)


def normalize_condition_name(raw: str) -> str:
    """Kept as written: only NFC and trimmed (names may be Devanagari, Tamil or Urdu text)."""
    return unicodedata.normalize("NFC", raw).strip()


def normalize_system_type(raw: str) -> str:
    """'AYURVEDA' -> 'Ayurveda'; an unknown word keeps its cleaned text (rule `bad_system`)."""
    text = clean_token(raw)
    return _SYSTEM_BY_WORD.get(text.casefold(), text)


def normalize_severity(raw: str) -> str | None:
    """'mod.' / '2' / 'मध्यम' -> 'Moderate'; empty -> None; unknown keeps its text (`bad_severity`)."""
    text = clean_token(raw)
    if not text:
        return None
    return _SEVERITY_BY_WORD.get(text.casefold().rstrip(".").strip(), text)


def normalize_namaste_code(raw: str) -> str | None:
    """Stored as given after clean_token (NAMASTE codes are case- and punctuation-significant)."""
    return clean_token(raw) or None


def read_date(raw: str, *, day_first: bool = True) -> tuple[str | None, str | None]:
    """(ISO date, None) when `raw` names a real calendar date, else (None, why not). Bounds not checked."""
    text = _MIDNIGHT.sub("", clean_token(raw))
    numeric = "dd/mm/yyyy, dd-mm-yyyy" if day_first else "mm/dd/yyyy, mm-dd-yyyy"
    unreadable = f"diagnosis_date is not in a recognised format ({_DATE_FORMATS.format(numeric=numeric)})"
    if match := _ISO_DATE.fullmatch(text):
        year, month, day = (int(part) for part in match.groups())
    elif match := _NUMERIC_DATE.fullmatch(text):
        first, _, second, year_text = match.groups()
        day, month = (int(first), int(second)) if day_first else (int(second), int(first))
        year = _full_year(year_text)
        if not 1 <= month <= 12:
            order = "day-first" if day_first else "month-first"
            return None, f"diagnosis_date has month {month}, read {order} (TM2_DAY_FIRST={day_first})"
    elif match := _MONTH_NAME_DATE.fullmatch(text):
        day_text, _, month_text, year_text = match.groups()
        month = _MONTHS.get(month_text.lower(), 0)
        if not month:
            return None, unreadable
        day, year = int(day_text), _full_year(year_text)
    elif match := _EXCEL_SERIAL.fullmatch(text):
        return (_EXCEL_EPOCH + datetime.timedelta(days=int(match.group(1)))).isoformat(), None
    else:
        return None, unreadable
    try:
        return datetime.date(year, month, day).isoformat(), None
    except ValueError:
        return None, f"diagnosis_date {year:04d}-{month:02d}-{day:02d} does not exist"


def _full_year(year_text: str) -> int:
    if len(year_text) == 4:
        return int(year_text)
    two_digits = int(year_text)
    return 2000 + two_digits if two_digits < TWO_DIGIT_YEAR_PIVOT else 1900 + two_digits


def normalize_diagnosis_date(raw: str, *, day_first: bool = True) -> str | None:
    """ISO yyyy-mm-dd; "" when the cell is empty; None when it is not a readable, real date."""
    if not clean_token(raw):
        return ""
    return read_date(raw, day_first=day_first)[0]


# --- whole columns ------------------------------------------------------------------------------


def factorize(values: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, distinct values) like `pd.factorize(values, use_na_sentinel=False)`, faster.

    Asking pandas to keep nulls as values costs a null scan of the whole column first; the columns
    here rarely hold one, so the scan is done only when the plain factorization saw a null.
    """
    positions, uniques = pd.factorize(values)
    if len(positions) and positions.min() < 0:
        return pd.factorize(values, use_na_sentinel=False)
    return positions, np.asarray(uniques, dtype=object)


def map_unique(values: pd.Series, normalizer: Callable[[str], object]) -> pd.Series:
    """`normalizer` applied once per distinct value, spread back by position (one hash pass)."""
    positions, uniques = factorize(values)
    results = np.empty(len(uniques), dtype=object)
    results[:] = [normalizer(value) for value in uniques]
    return pd.Series(results[positions], index=values.index, dtype=object)


def normalize_tm2_frame(frame: pd.DataFrame, *, day_first: bool = True) -> pd.DataFrame:
    """The TM2 columns of a raw frame (all str) in canonical form; same index, same column names."""
    normalizers: dict[str, Callable[[str], object]] = {
        "patient_id": normalize_patient_id,
        "tm2_code": normalize_tm2_code,
        "condition_name": normalize_condition_name,
        "system_type": normalize_system_type,
        "severity": normalize_severity,
        "diagnosis_date": partial(normalize_diagnosis_date, day_first=day_first),
        "practitioner_id": normalize_identifier,
        "namaste_code": normalize_namaste_code,
    }
    return pd.DataFrame({column: map_unique(frame[column], fn) for column, fn in normalizers.items()})


def namaste_mismatches(records: pd.DataFrame) -> pd.Series:
    """True where an Ayurveda row's NAMASTE code is in the crosswalk but not paired with its TM2 code."""
    crosswalk = namaste_crosswalk()
    verdicts = pd.Series(False, index=records.index, dtype=bool)
    # The crosswalk is Ayurveda's; most rows carry no NAMASTE code at all.
    candidates = records.loc[
        records["namaste_code"].notna() & records["system_type"].eq("Ayurveda"), ["namaste_code", "tm2_code"]
    ]
    pairs = list(zip(candidates["namaste_code"], candidates["tm2_code"], strict=True))
    mismatched = {
        (namaste, tm2): (paired := crosswalk.tm2_codes_for(namaste)) is not None and tm2 not in paired
        for namaste, tm2 in set(pairs)
    }
    if pairs:
        verdicts.loc[candidates.index] = np.array([mismatched[pair] for pair in pairs], dtype=bool)
    return verdicts


# --- messages -----------------------------------------------------------------------------------


def explain(
    column: str, check: str, raw: str, value: object, *, today: datetime.date, day_first: bool
) -> str:
    """The message for `column` failing `check`; `raw` is the cell as read, `value` its canonical form."""
    if check == "missing":
        return f"{column} is empty"
    if check == "tm1_code":
        return f"{value} is an ICD-11 TM1 (Module I) code, not TM2"
    if check == "unknown_code":
        return _unknown_code_message(str(value))
    if check == "bad_date":
        return read_date(raw, day_first=day_first)[1] or f"{column} is not a date"
    if check == "future_date":
        return f"diagnosis_date {value} is after today ({today.isoformat()})"
    if check == "too_old":
        return f"diagnosis_date {value} is before {OLDEST_DATE.isoformat()}"
    if check == "bad_system":
        return f"system_type {_echo(value)}is not Ayurveda, Siddha or Unani"
    if check == "bad_severity":
        return f"severity {_echo(value)}is not Mild, Moderate or Severe (nor 1/2/3 or a known abbreviation)"
    if check == "excel_mangled_id":
        return (
            f"{column} was turned into a number in scientific notation by a spreadsheet (like 9.1E+13); "
            "its digits are lost: re-export with the column formatted as text"
        )
    if check == "too_long":
        most = MAX_CONDITION_NAME_LENGTH if column == "condition_name" else MAX_IDENTIFIER_LENGTH
        return f"{column} has {len(str(value))} characters (at most {most})"
    if check == "control_chars":
        return f"{column} contains control or invisible formatting characters"
    return f"{column} failed {check}"


def namaste_mismatch_message(namaste_code: str, tm2_code: str) -> str:
    paired = sorted(namaste_crosswalk().tm2_codes_for(namaste_code) or ())
    listed = ", ".join(paired[:5]) + (", ..." if len(paired) > 5 else "")
    return f"NAMASTE {namaste_code} is paired with {listed} in the crosswalk, not with {tm2_code}"


def _unknown_code_message(code: str) -> str:
    if not is_code_shaped(code):
        return (
            f"tm2_code ({len(code)} characters, not shaped like an ICD-11 code) is not a TM2 code: "
            "TM2 codes are 4 characters, SK00-ST2Z"
        )
    message = f"{code} is not a code of ICD-11 TM2 {ICD_RELEASE}"
    suggestions = tm2_code_list().suggest(code)
    if suggestions:
        message += f"; did you mean {' or '.join(suggestions[:3])}?"
    return message


def _echo(value: object) -> str:
    text = str(value)
    # Short words only: a value with a digit in it may be an identifier from a swapped column
    # (`tm2 rejects` prints reasons without --with-values).
    return f"'{text}' " if len(text) <= _ECHO_LIMIT and _ECHO_WORDS.fullmatch(text) else ""
