"""quality_report.py: counts per outcome, reason, system, block and rejected code; never a patient id."""

from __future__ import annotations

import datetime
from pathlib import Path

from tm2_pipeline.quality_report import quality_report_markdown
from tm2_pipeline.validation import validate_tm2_export

TODAY = datetime.date(2026, 6, 1)
ROOT = Path(__file__).resolve().parent
HEADER = "patient_id,tm2_code,condition_name,system_type,severity,diagnosis_date,practitioner_id,namaste_code"


def test_sample_report_counts() -> None:
    result = validate_tm2_export((ROOT.parent / "data" / "tm2_sample.csv").read_bytes(), today=TODAY)
    report = quality_report_markdown(result, "tm2_sample.csv")
    assert report.startswith("## TM2 quality report: tm2_sample.csv\n")
    assert "| 102 | 96 | 2 | 4 | 11 |" in report
    assert "Read as utf-8, delimiter comma." in report
    for line in (
        "| tm2_code | tm1_code | 1 |",
        "| tm2_code | unknown_code | 1 |",
        "| patient_id | excel_mangled_id | 1 |",
        "| diagnosis_date | future_date | 1 |",
        "| condition_name | missing | 11 |",
        "| Ayurveda | 32 |",
        "| Siddha | 32 |",
        "| Unani | 32 |",
        "| Body constitution and temperament patterns (TM2) | 9 |",
        "| SA00 | 1 |",
        "| SR5Z€ | 1 |",
    ):
        assert line in report, line
    assert "Ignored columns" not in report
    assert "ICD-11 © World Health Organization" in report
    for patient in ("9.11235E+13", "MRN-0", "91-", "913229"):
        assert patient not in report


def test_report_of_an_empty_file_with_ignored_columns() -> None:
    result = validate_tm2_export(f"{HEADER},Remarks,Remarks|x\n".encode(), today=TODAY)
    report = quality_report_markdown(result, "a|b.csv")
    assert report.startswith("## TM2 quality report: a\\|b.csv\n")
    assert "| 0 | 0 | 0 | 0 | 0 |" in report
    # Only names that read like names are shown (reading._nameable); others by their position.
    assert "Ignored columns: `Remarks`, `(column 10: name not shown)`." in report
    assert report.count("none") == 5  # reasons, warnings, systems, blocks, rejected codes


def test_long_junk_in_the_code_column_is_not_echoed() -> None:
    data = f"{HEADER}\nMRN-1,MRN-SECRET-12345,x,Unani,,2024-01-15,H,\n".encode()
    report = quality_report_markdown(validate_tm2_export(data, today=TODAY), "f.csv")
    assert "MRN-SECRET" not in report
    assert "| (16 characters) | 1 |" in report


def test_a_short_identifier_in_the_code_column_is_not_echoed_but_a_junk_code_is() -> None:
    data = f"{HEADER}\nMRN-1,MRN4711,x,Unani,,2024-01-15,H,\nMRN-2,SR5Z€,x,Unani,,2024-01-15,H,\n".encode()
    result = validate_tm2_export(data, today=TODAY)
    report = quality_report_markdown(result, "f.csv")
    assert "MRN4711" not in report and "4711" not in str(result.rejected_rows[0]["reasons"])
    assert "| (7 characters) | 1 |" in report
    assert "| SR5Z€ | 1 |" in report
