"""normalize.py: each normalizer on the dirt real exports carry, plus properties (hypothesis)."""

from __future__ import annotations

import datetime
import re
import unicodedata

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tm2_pipeline.identity import normalize_patient_id
from tm2_pipeline.normalize import (
    explain,
    map_unique,
    namaste_mismatch_message,
    namaste_mismatches,
    normalize_condition_name,
    normalize_diagnosis_date,
    normalize_identifier,
    normalize_namaste_code,
    normalize_severity,
    normalize_system_type,
    normalize_tm2_code,
    normalize_tm2_frame,
    read_date,
)

TODAY = datetime.date(2026, 6, 1)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("SR11", "SR11"),
        ("sr11", "SR11"),
        ("SR11\u00a0", "SR11"),
        ("  sp0y  ", "SP0Y"),
        ("S\u200bK00", "SK00"),
        ("ＳＫ００", "SK00"),  # full-width (NFKC)
        ("SR5Z€", "SR5Z€"),  # junk kept: the unknown_code rule rejects it
        ("", ""),
    ],
)
def test_normalize_tm2_code(raw: str, expected: str) -> None:
    assert normalize_tm2_code(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("AYURVEDA", "Ayurveda"),
        ("ayurveda ", "Ayurveda"),
        ("\u00a0Siddha", "Siddha"),
        ("UNANI", "Unani"),
        ("uNaNi", "Unani"),
        ("Homeopathy", "Homeopathy"),
        ("", ""),
    ],
)
def test_normalize_system_type(raw: str, expected: str) -> None:
    assert normalize_system_type(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Mild", "Mild"),
        ("mild", "Mild"),
        ("MILD", "Mild"),
        ("mld", "Mild"),
        ("1", "Mild"),
        ("हल्का", "Mild"),
        ("मामूली", "Mild"),
        ("Moderate", "Moderate"),
        ("MODERATE", "Moderate"),
        ("mod.", "Moderate"),
        ("Mod", "Moderate"),
        ("2", "Moderate"),
        ("मध्यम", "Moderate"),
        ("severe", "Severe"),
        ("sev", "Severe"),
        ("Sev.", "Severe"),
        ("3", "Severe"),
        ("3.0", "Severe"),
        ("गंभीर", "Severe"),
        ("", None),
        ("  ", None),
        ("very bad", "very bad"),  # kept: the bad_severity rule rejects it
        ("4", "4"),
    ],
)
def test_normalize_severity(raw: str, expected: str | None) -> None:
    assert normalize_severity(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-01-15", "2024-01-15"),
        ("2024-1-5", "2024-01-05"),
        ("2025-07-08 00:00:00", "2025-07-08"),
        ("2025-07-08T00:00:00", "2025-07-08"),
        ("15/01/2024", "2024-01-15"),
        ("15-01-2024", "2024-01-15"),
        ("15.01.2024", "2024-01-15"),
        ("05/01/2025", "2025-01-05"),  # day-first
        ("15-Jan-24", "2024-01-15"),
        ("15-JAN-2024", "2024-01-15"),
        ("1 Sept 2024", "2024-09-01"),
        ("22-Dec-23", "2023-12-22"),
        ("14-Dec-25", "2025-12-14"),
        ("01-Jan-99", "1999-01-01"),  # 69-99: the 1900s
        ("01-Jan-26", "2026-01-01"),  # this year stays this year
        ("45730", "2025-03-14"),  # Excel day number
        ("45730.0", "2025-03-14"),
        (" 2024-01-15 ", "2024-01-15"),
        ("", ""),
        ("2025-02-30", None),
        ("31/04/2024", None),
        ("01/25/2024", None),  # month 25 read day-first: never swapped
        ("2024", None),  # a bare year is not an Excel day number
        ("15-Foo-24", None),
        ("2024-01-15 14:30:00", None),
        ("yesterday", None),
        ("2031-01-01", "2031-01-01"),  # in range of the calendar: the future_date rule rejects it
        ("1899-12-31", "1899-12-31"),  # ditto too_old
    ],
)
def test_normalize_diagnosis_date_day_first(raw: str, expected: str | None) -> None:
    assert normalize_diagnosis_date(raw, day_first=True) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("01/25/2024", "2024-01-25"),
        ("05/01/2025", "2025-05-01"),
        ("25/01/2024", None),
        ("2024-01-15", "2024-01-15"),
    ],
)
def test_normalize_diagnosis_date_month_first(raw: str, expected: str | None) -> None:
    assert normalize_diagnosis_date(raw, day_first=False) == expected


def test_two_digit_years_pivot_on_a_fixed_year_never_on_today() -> None:
    # From a review: "05/01/27" read in late 2026 was 1927 (accepted), read in 2027 it was 2027: a
    # second record key for the same row. Now it is 2027 whenever it is read (future_date rejects it
    # until then), and only 69-99 are the 1900s.
    assert normalize_diagnosis_date("05/01/27") == "2027-01-05"
    assert normalize_diagnosis_date("01-Jan-68") == "2068-01-01"
    assert normalize_diagnosis_date("01-Jan-69") == "1969-01-01"


def test_read_date_explains_why_not() -> None:
    assert read_date("2025-02-30") == (None, "diagnosis_date 2025-02-30 does not exist")
    iso, why = read_date("01/25/2024")
    assert iso is None and "month 25" in why and "day-first" in why
    iso, why = read_date("MRN-0001")
    assert iso is None and "recognised format" in why and "MRN-0001" not in why


def test_identifiers_condition_names_and_namaste_codes() -> None:
    assert normalize_identifier("  dr.meera@hpr.abdm\u00a0") == "dr.meera@hpr.abdm"
    assert normalize_identifier("KA-AYU  12345") == "KA-AYU 12345"
    assert normalize_condition_name("  Decrease of Val\u0323i pattern ") == "Decrease of Vaḷi pattern"
    assert normalize_condition_name(" वातव्याधि ") == "वातव्याधि"
    assert normalize_condition_name('Joint pain,\nwith "swelling"') == 'Joint pain,\nwith "swelling"'
    assert normalize_condition_name("ﬁbrosis") == "ﬁbrosis"  # NFC only: no compatibility folding of names
    assert normalize_namaste_code(" EJ-2.4 ") == "EJ-2.4"
    assert normalize_namaste_code("Z$1") == "Z$1"
    assert normalize_namaste_code("") is None


def test_normalize_tm2_frame_maps_every_column() -> None:
    raw = pd.DataFrame(
        {
            "patient_id": ["91 2868 4283 4708", "mrn-1"],
            "tm2_code": ["ss53\u00a0", "sk00"],
            "condition_name": [" x ", ""],
            "system_type": ["AYURVEDA", "unani"],
            "severity": ["mod.", ""],
            "diagnosis_date": ["15-Jan-24", "junk"],
            "practitioner_id": [" HPR-1 ", "h"],
            "namaste_code": ["VA-4", ""],
            "row": [1, 2],
        },
        index=[10, 20],
    )
    normalized = normalize_tm2_frame(raw)
    assert list(normalized.index) == [10, 20]
    assert normalized.loc[10].tolist() == [
        "91-2868-4283-4708",
        "SS53",
        "x",
        "Ayurveda",
        "Moderate",
        "2024-01-15",
        "HPR-1",
        "VA-4",
    ]
    assert normalized.loc[20].tolist() == ["MRN-1", "SK00", "", "Unani", None, None, "h", None]


def test_map_unique_calls_the_normalizer_once_per_distinct_value() -> None:
    calls: list[str] = []

    def spy(value: str) -> str:
        calls.append(value)
        return value.upper()

    mapped = map_unique(pd.Series(["a", "b", "a", "a", "b"]), spy)
    assert mapped.tolist() == ["A", "B", "A", "A", "B"]
    assert sorted(calls) == ["a", "b"]


def test_namaste_mismatch_only_for_listed_ayurveda_codes() -> None:
    records = pd.DataFrame(
        {
            "system_type": ["Ayurveda", "Ayurveda", "Siddha", "Ayurveda", "Ayurveda"],
            "namaste_code": ["VA-4", "AAA-1", "AAA-1", "NOT-LISTED", None],
            "tm2_code": ["SS53", "SK00", "SK00", "SK00", "SK00"],
        }
    )
    assert namaste_mismatches(records).tolist() == [False, True, False, False, False]
    assert (
        namaste_mismatch_message("AAA-1", "SK00")
        == "NAMASTE AAA-1 is paired with SR11 in the crosswalk, not with SK00"
    )


@pytest.mark.parametrize(
    ("column", "check", "raw", "value", "expected"),
    [
        ("tm2_code", "tm1_code", "SA00", "SA00", "SA00 is an ICD-11 TM1 (Module I) code, not TM2"),
        (
            "tm2_code",
            "unknown_code",
            "SR5Z€",
            "SR5Z€",
            "SR5Z€ is not a code of ICD-11 TM2 2025-01; did you mean SR5Z?",
        ),
        ("tm2_code", "unknown_code", "8A80", "8A80", "8A80 is not a code of ICD-11 TM2 2025-01"),
        (
            "diagnosis_date",
            "future_date",
            "2031-01-01",
            "2031-01-01",
            "diagnosis_date 2031-01-01 is after today (2026-06-01)",
        ),
        (
            "diagnosis_date",
            "too_old",
            "1899-12-31",
            "1899-12-31",
            "diagnosis_date 1899-12-31 is before 1900-01-01",
        ),
        ("diagnosis_date", "bad_date", "2025-02-30", None, "diagnosis_date 2025-02-30 does not exist"),
        (
            "system_type",
            "bad_system",
            "Homeopathy",
            "Homeopathy",
            "system_type 'Homeopathy' is not Ayurveda, Siddha or Unani",
        ),
        ("patient_id", "missing", "", "", "patient_id is empty"),
        ("practitioner_id", "too_long", "x" * 70, "x" * 70, "practitioner_id has 70 characters (at most 64)"),
    ],
)
def test_explain_messages(column: str, check: str, raw: str, value: object, expected: str) -> None:
    assert explain(column, check, raw, value, today=TODAY, day_first=True) == expected


def test_explain_never_echoes_identifiers() -> None:
    secret = "9.11235E+13"
    for check in ("excel_mangled_id", "too_long", "control_chars", "missing"):
        assert secret not in explain("patient_id", check, secret, secret, today=TODAY, day_first=True)
    # A short identifier in a swapped system or severity column: not quoted back (an audit found
    # "MRN-01" and the like were, up to two digits).
    for column, check in (("system_type", "bad_system"), ("severity", "bad_severity")):
        for short_id in ("MRN-01", "AB12", "P7", "12"):
            message = explain(column, check, short_id, short_id, today=TODAY, day_first=True)
            assert short_id not in message, message
    assert "'4'" in explain("severity", "bad_severity", "4", "4", today=TODAY, day_first=True)
    assert "'Sowa-Rigpa'" in explain(
        "system_type", "bad_system", "Sowa-Rigpa", "Sowa-Rigpa", today=TODAY, day_first=True
    )
    long_code = "MRN-000123-PATIENT"
    assert long_code not in explain(
        "tm2_code", "unknown_code", long_code, long_code, today=TODAY, day_first=True
    )


@pytest.mark.parametrize(
    ("column", "check", "value"),
    [
        ("tm2_code", "unknown_code", "MRN4711"),  # short MRNs from a swapped column are not code-shaped
        ("tm2_code", "unknown_code", "P00471"),
        ("system_type", "bad_system", "MRN4711"),
        ("severity", "bad_severity", "4711"),
    ],
)
def test_explain_does_not_echo_a_short_identifier_from_a_swapped_column(
    column: str, check: str, value: str
) -> None:
    message = explain(column, check, value, value, today=TODAY, day_first=True)
    assert "4711" not in message and "471" not in message
    assert message.startswith(column)


# --- properties ---------------------------------------------------------------------------------

dirty_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("skSKrR0123456789yYzZ-./ \t\u00a0\u200b\u3000\ufeffﬁＳ€é")),
        st.characters(codec="utf-8"),
    ),
    max_size=20,
)


@settings(max_examples=150, deadline=None)
@given(dirty_text)
def test_text_normalizers_are_idempotent(text: str) -> None:
    for normalizer in (
        normalize_tm2_code,
        normalize_system_type,
        normalize_identifier,
        normalize_condition_name,
        normalize_patient_id,
    ):
        once = normalizer(text)
        assert normalizer(once) == once
    severity = normalize_severity(text)
    assert severity is None or normalize_severity(severity) == severity


@settings(max_examples=300, deadline=None)
@given(dirty_text)
def test_patient_id_has_no_whitespace_runs_or_edges(text: str) -> None:
    patient = normalize_patient_id(text)
    assert patient == patient.strip()
    assert not re.search(r"\s\s", patient)
    assert not re.search(r"\s", patient.replace(" ", ""))  # only plain spaces remain
    assert patient == unicodedata.normalize("NFKC", patient)


@settings(max_examples=300, deadline=None)
@given(dirty_text)
def test_date_normalizer_never_raises_and_yields_iso_or_nothing(text: str) -> None:
    result = normalize_diagnosis_date(text)
    if result:
        assert datetime.date.fromisoformat(result).isoformat() == result
        assert normalize_diagnosis_date(result) == result


_FORMATS_DAY_FIRST = ("%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y", "%d-%b-%Y", "%Y-%m-%d 00:00:00")


@settings(max_examples=200, deadline=None)
@given(st.dates(min_value=datetime.date(1900, 1, 1), max_value=TODAY), st.sampled_from(_FORMATS_DAY_FIRST))
def test_every_written_date_reads_back(day: datetime.date, pattern: str) -> None:
    assert normalize_diagnosis_date(day.strftime(pattern)) == day.isoformat()
    assert normalize_diagnosis_date(
        day.strftime(pattern.replace("%d/%m", "%m/%d").replace("%d-%m", "%m-%d")),
        day_first=False,
    ) == (day.isoformat())


@settings(max_examples=100, deadline=None)
@given(st.dates(min_value=datetime.date(1969, 1, 1), max_value=datetime.date(2068, 12, 31)))
def test_two_digit_years_read_back_as_strptime_reads_them(day: datetime.date) -> None:
    text = day.strftime("%d-%b-%y")
    assert normalize_diagnosis_date(text) == day.isoformat()
    assert day == datetime.datetime.strptime(text, "%d-%b-%y").date()


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=10_000, max_value=99_999))
def test_excel_day_numbers(serial: int) -> None:
    expected = datetime.date(1899, 12, 30) + datetime.timedelta(days=serial)
    assert normalize_diagnosis_date(str(serial)) == expected.isoformat()
