"""validation.py: the facade on the dirt catalogue, the shipped sample, generated files (hypothesis)."""

from __future__ import annotations

import csv
import datetime
import io
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tm2_pipeline.reading import FileRefused, read_tm2_bytes
from tm2_pipeline.records import ACCEPTED_RECORD_COLUMNS
from tm2_pipeline.validation import (
    ValidationResult,
    validate_tm2_export,
    validate_tm2_table,
)

TODAY = datetime.date(2026, 6, 1)
FIXTURES = Path(__file__).parent / "fixtures" / "validation"
SAMPLE = Path(__file__).resolve().parent.parent / "data" / "tm2_sample.csv"
HEADER = "patient_id,tm2_code,condition_name,system_type,severity,diagnosis_date,practitioner_id,namaste_code"
SN3Z_TITLE = "Urinary and reproductive system disorders (TM2), unspecified"


def catalogue() -> tuple[ValidationResult, list[dict[str, str]]]:
    data = (FIXTURES / "dirt_catalogue.csv").read_bytes()
    expectations = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    return validate_tm2_export(data, today=TODAY), expectations


CATALOGUE_RESULT, CATALOGUE = catalogue()


def all_messages(result: ValidationResult) -> list[str]:
    reasons = [reason["message"] for row in result.rejected_rows for reason in row["reasons"]]
    return reasons + [warning["message"] for warning in result.warnings]


@pytest.mark.parametrize("row", range(1, len(CATALOGUE) + 1), ids=[case["case"] for case in CATALOGUE])
def test_dirt_catalogue(row: int) -> None:
    result, expected = CATALOGUE_RESULT, CATALOGUE[row - 1]
    records = result.accepted_records.set_index("source_row")
    rejected = {entry["row"]: entry for entry in result.rejected_rows}
    duplicates = {entry["row"]: entry["duplicate_of_row"] for entry in result.duplicate_rows}
    warnings = [(w["column"], w["check"]) for w in result.warnings if w["row"] == row]
    outcome = expected["expect"]
    if outcome in ("accept", "warn"):
        assert row in records.index, rejected.get(row)
        stored = records.at[row, expected["expect_column"]]
        assert (stored if stored is not None else "") == expected["expect_value"]
        wanted = [(expected["expect_column"], expected["expect_check"])] if outcome == "warn" else []
        assert warnings == wanted
    elif outcome == "reject":
        reasons = [(reason["column"], reason["check"]) for reason in rejected[row]["reasons"]]
        assert reasons == list(
            zip(expected["expect_column"].split(), expected["expect_check"].split(), strict=True)
        )
    else:
        assert duplicates[row] == int(expected["expect_value"])


def test_dirt_catalogue_accounting_and_ignored_columns() -> None:
    result = CATALOGUE_RESULT
    outcomes = [case["expect"] for case in CATALOGUE]
    assert result.rows == len(CATALOGUE)
    assert result.rejected == outcomes.count("reject")
    assert result.duplicates == outcomes.count("duplicate")
    assert result.accepted == outcomes.count("accept") + outcomes.count("warn")
    assert result.ignored_columns == ["case", "expect", "expect_column", "expect_check", "expect_value"]
    ragged = result.rejected_rows[-1]
    assert ragged["reasons"] == [
        {"column": "*", "check": "ragged_row", "message": "row has 14 fields, the header has 13"}
    ]
    assert ragged["values"]["patient_id"] == "MRN-C999"


def test_rejected_rows_keep_raw_values_and_messages_never_name_patients() -> None:
    result = CATALOGUE_RESULT
    mangled = next(
        entry for entry in result.rejected_rows if entry["reasons"][0]["check"] == "excel_mangled_id"
    )
    assert mangled["values"]["patient_id"] == "9.11235E+13"
    assert set(mangled["values"]) == set(HEADER.split(","))
    patients = {case["patient_id"].strip() for case in CATALOGUE} | set(result.accepted_records["patient_id"])
    for message in all_messages(result):
        for patient in patients - {""}:
            assert patient not in message
        assert "HPR-71-0000-0001" not in message and "meera" not in message


def test_sample_accounting() -> None:
    result = validate_tm2_export(SAMPLE.read_bytes(), today=TODAY)
    assert (result.rows, result.accepted, result.duplicates, result.rejected) == (102, 96, 2, 4)
    reasons = {
        entry["row"]: [(r["column"], r["check"]) for r in entry["reasons"]] for entry in result.rejected_rows
    }
    assert reasons == {
        13: [("tm2_code", "tm1_code")],  # SA00
        34: [("tm2_code", "unknown_code")],  # SR5Z€
        58: [("patient_id", "excel_mangled_id")],  # 9.11235E+13
        79: [("diagnosis_date", "future_date")],  # 2031-01-01
    }
    assert result.rejected_rows[1]["reasons"][0]["message"].endswith("did you mean SR5Z?")
    assert list(result.duplicate_rows) == [
        {"row": 22, "duplicate_of_row": 6},
        {"row": 43, "duplicate_of_row": 32},
    ]
    assert {w["check"] for w in result.warnings} == {"missing"}  # names filled; every NAMASTE pair matches
    assert len(result.warnings) == 11
    assert (result.encoding, result.delimiter, result.ignored_columns) == ("utf-8", ",", [])
    records = result.accepted_records.set_index("source_row")
    assert records.loc[1, ["patient_id", "tm2_code", "system_type", "namaste_code"]].tolist() == [
        "91-3229-3771-7516",
        "SS53",
        "Ayurveda",
        "VA-4",
    ]
    assert records.loc[2, "diagnosis_date"] == "2025-01-05"  # 05/01/2025, day-first
    assert records.loc[3, "diagnosis_date"] == "2023-12-22"  # 22-Dec-23
    assert records.loc[6, ["severity", "condition_name"]].tolist() == ["Moderate", "Cataract disorder"]
    # Row 8 left condition_name empty: the stored name is WHO's title.
    assert records.loc[8, ["condition_name", "who_title"]].tolist() == [SN3Z_TITLE, SN3Z_TITLE]
    assert records.loc[8, ["severity", "diagnosis_date"]].tolist() == ["Mild", "2025-01-01"]
    assert records["record_key"].is_unique


def test_header_only_file_succeeds_with_zeros() -> None:
    result = validate_tm2_export(f"{HEADER}\r\n".encode(), today=TODAY)
    assert (result.rows, result.accepted, result.duplicates, result.rejected) == (0, 0, 0, 0)
    assert tuple(result.accepted_records.columns) == ACCEPTED_RECORD_COLUMNS
    assert result.rejected_rows == list(result.duplicate_rows) == list(result.warnings) == []


def test_refused_file_raises() -> None:
    with pytest.raises(FileRefused) as caught:
        validate_tm2_export(b"", today=TODAY)
    assert caught.value.reason == "empty"


def test_day_first_switch() -> None:
    data = f"{HEADER}\nMRN-1,SK00,x,Unani,,05/01/2025,H,\n".encode()
    assert validate_tm2_export(data, today=TODAY).accepted_records.at[0, "diagnosis_date"] == "2025-01-05"
    month_first = validate_tm2_table(read_tm2_bytes(data), today=TODAY, day_first=False)
    assert month_first.accepted_records.at[0, "diagnosis_date"] == "2025-05-01"


@pytest.mark.parametrize("result_name", ["catalogue", "sample", "empty"])
def test_accepted_records_round_trip_through_parquet(result_name: str) -> None:
    data = {
        "catalogue": (FIXTURES / "dirt_catalogue.csv").read_bytes(),
        "sample": SAMPLE.read_bytes(),
        "empty": f"{HEADER}\n".encode(),
    }[result_name]
    records = validate_tm2_export(data, today=TODAY).accepted_records
    assert tuple(records.columns) == ACCEPTED_RECORD_COLUMNS
    assert str(records["source_row"].dtype) == "int64"
    assert all(str(records[column].dtype) == "object" for column in ACCEPTED_RECORD_COLUMNS[:-1])
    buffer = io.BytesIO()
    records.to_parquet(buffer, engine="pyarrow", index=False)
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(buffer.getvalue()), engine="pyarrow"), records)
    if len(records):
        assert records["severity"].map(lambda value: value is None or isinstance(value, str)).all()


# --- accounting over generated files --------------------------------------------------------------

cells = {
    "patient_id": st.sampled_from(
        ["MRN-1", "mrn-1 ", "MRN-2", "91322937717516", "9.11235E+13", "", "MRN\x07"]
    ),
    "tm2_code": st.sampled_from(["SK00", "sk00", "SR11\u00a0", "SA00", "SR5Z€", "", "SK40"]),
    "condition_name": st.sampled_from(["", "Headache", 'a, "b"\nc', "वातव्याधि"]),
    "system_type": st.sampled_from(["Ayurveda", "UNANI", "siddha", "Homeopathy", ""]),
    "severity": st.sampled_from(["", "Mild", "mod.", "3", "गंभीर", "worst"]),
    "diagnosis_date": st.sampled_from(
        ["2024-01-15", "15/01/2024", "15-Jan-24", "45730", "2025-02-30", "2031-01-01", ""]
    ),
    "practitioner_id": st.sampled_from(["HPR-1", " HPR-1", "", "x" * 70]),
    "namaste_code": st.sampled_from(["", "AAA-1", "VA-4"]),
}
generated_row = st.fixed_dictionaries(cells).map(lambda row: list(row.values()))
ragged_row = st.lists(st.sampled_from(["MRN-9", "SK00", ""]), min_size=1, max_size=10).filter(
    lambda fields: len(fields) != 8 and "".join(fields).strip()
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(generated_row, generated_row, generated_row, ragged_row), max_size=25),
    st.sampled_from([",", ";", "\t"]),
)
def test_every_generated_row_is_accepted_duplicate_or_rejected(rows: list[list[str]], delimiter: str) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(HEADER.split(","))
    writer.writerows(rows)
    result = validate_tm2_export(out.getvalue().encode("utf-8"), today=TODAY)
    data_rows = [row for row in rows if "".join(row).strip()]  # blank records are not rows
    assert result.rows == len(data_rows) == result.accepted + result.duplicates + result.rejected
    accepted = set(result.accepted_records["source_row"])
    duplicate = {entry["row"] for entry in result.duplicate_rows}
    rejected = {entry["row"] for entry in result.rejected_rows}
    assert len(accepted) + len(duplicate) + len(rejected) == result.rows
    assert accepted | duplicate | rejected == {i + 1 for i, row in enumerate(rows) if "".join(row).strip()}
    assert result.accepted_records["record_key"].is_unique
    assert all(entry["duplicate_of_row"] in accepted for entry in result.duplicate_rows)
    assert all(entry["reasons"] for entry in result.rejected_rows)


def test_utf16_and_cp1252_exports_validate_to_the_same_records() -> None:
    rows = [
        [
            "MRN-1",
            "st0v",
            "Change of temperament of psychic Rūḥ pattern",
            "UNANI",
            "mild",
            "15/01/2024",
            "H-1",
            "",
        ],
        ["MRN-2", "SK00 ", "Névralgie’s crisis", "siddha", "2", "15-Jan-24", "H-2", ""],
    ]
    utf16 = "\r\n".join("\t".join(row) for row in [HEADER.split(","), *rows]) + "\r\n"
    from_utf16 = validate_tm2_export(b"\xff\xfe" + utf16.encode("utf-16-le"), today=TODAY)
    cp1252 = "\r\n".join(";".join(row) for row in [HEADER.split(","), rows[1]]) + "\r\n"
    from_cp1252 = validate_tm2_export(cp1252.encode("cp1252"), today=TODAY)
    assert (from_utf16.encoding, from_utf16.delimiter, from_utf16.accepted) == ("utf-16-le", "\t", 2)
    assert (from_cp1252.encoding, from_cp1252.delimiter, from_cp1252.accepted) == ("cp1252", ";", 1)
    first, second = from_utf16.accepted_records.to_dict("records")
    assert (first["tm2_code"], first["system_type"], first["severity"], first["diagnosis_date"]) == (
        "ST0V",
        "Unani",
        "Mild",
        "2024-01-15",
    )
    assert first["condition_name"] == "Change of temperament of psychic Rūḥ pattern"
    assert from_cp1252.accepted_records.to_dict("records")[0] | {"source_row": 2} == second
    assert second["condition_name"] == "Névralgie’s crisis"


def _as_comparable(result: ValidationResult) -> dict:
    return {
        "counts": (result.rows, result.accepted, result.duplicates, result.rejected),
        "records": None if result.accepted_records is None else result.accepted_records.to_dict("records"),
        "rejected": result.rejected_rows,
        "duplicates": list(result.duplicate_rows),
        "warnings": list(result.warnings),
        "file": (result.encoding, result.delimiter, result.ignored_columns),
    }


@pytest.mark.parametrize("source", ["dirt_catalogue", "sample"])
def test_validation_in_chunks_equals_validation_in_one_piece(source: str) -> None:
    data = (FIXTURES / "dirt_catalogue.csv" if source == "dirt_catalogue" else SAMPLE).read_bytes()
    header, _, body = data.partition(b"\n")
    # The file three times over: every key comes back in later chunks, duplicates of duplicates too.
    data = header + b"\n" + body + body + body
    whole = validate_tm2_export(data, today=TODAY, chunk_rows=10**9)
    assert whole.duplicates >= 2 * whole.accepted > 0  # each accepted key comes back twice
    for chunk_rows in (4, 29):
        chunked = validate_tm2_export(data, today=TODAY, chunk_rows=chunk_rows)
        assert _as_comparable(chunked) == _as_comparable(whole), chunk_rows


def test_records_streamed_to_a_sink_are_the_records_gathered_in_memory() -> None:
    header, _, body = SAMPLE.read_bytes().partition(b"\n")
    data = header + b"\n" + body + body  # keys of early chunks come back in later ones
    gathered = validate_tm2_export(data, today=TODAY, chunk_rows=29)
    chunks: list[pd.DataFrame] = []
    streamed = validate_tm2_export(data, today=TODAY, chunk_rows=29, sink=chunks.append)
    assert streamed.accepted_records is None
    assert len(chunks) > 3 and all(tuple(chunk.columns) == ACCEPTED_RECORD_COLUMNS for chunk in chunks)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), gathered.accepted_records)
    assert _as_comparable(streamed) == _as_comparable(gathered) | {"records": None}
    assert streamed.accepted_per_system == gathered.accepted_per_system
    assert sum(streamed.accepted_per_block.values()) == streamed.accepted == gathered.accepted


def test_rejected_rows_streamed_to_a_sink_are_the_rows_gathered_in_memory() -> None:
    header, _, body = (FIXTURES / "dirt_catalogue.csv").read_bytes().partition(b"\n")
    data = header + b"\n" + body + body
    gathered = validate_tm2_export(data, today=TODAY, chunk_rows=5)
    chunks: list[list[dict]] = []
    streamed = validate_tm2_export(data, today=TODAY, chunk_rows=5, reject_sink=chunks.append)
    assert streamed.rejected_rows == [] and streamed.rejected == gathered.rejected > 10
    assert len(chunks) > 3 and [row for chunk in chunks for row in chunk] == gathered.rejected_rows
    for tally in ("rejection_reasons", "rejected_codes", "first_rejected_rows"):
        assert getattr(streamed, tally) == getattr(gathered, tally), tally
    reasons = Counter((r["column"], r["check"]) for row in gathered.rejected_rows for r in row["reasons"])
    assert gathered.rejection_reasons == dict(reasons)
    assert gathered.first_rejected_rows == [row["row"] for row in gathered.rejected_rows]
    code_checks = ("unknown_code", "tm1_code")
    with_code_reason = [
        row for row in gathered.rejected_rows if any(r["check"] in code_checks for r in row["reasons"])
    ]
    assert sum(gathered.rejected_codes.values()) == len(with_code_reason) > 0


def test_a_file_validated_from_disk_equals_its_bytes_validated_in_memory(tmp_path: Path) -> None:
    data = (FIXTURES / "dirt_catalogue.csv").read_bytes()
    path = tmp_path / "export.csv"
    path.write_bytes(data)
    from_disk = validate_tm2_export(path, today=TODAY, chunk_rows=7)
    assert _as_comparable(from_disk) == _as_comparable(validate_tm2_export(data, today=TODAY, chunk_rows=7))
    assert len(from_disk.warnings) > 0 and from_disk.rejected > 0


def test_a_duplicate_in_a_later_chunk_points_at_the_first_row_of_the_file() -> None:
    row = "MRN-1,SK00,Headache,Ayurveda,Mild,2024-01-15,HPR-1,"
    other = "MRN-2,SK00,Headache,Ayurveda,Mild,2024-01-15,HPR-1,"
    data = "\n".join(
        [HEADER, row, other, other, row, row, "mrn-1 ,sk00,Headache,ayurveda,,15/01/2024,HPR-1,"]
    )
    result = validate_tm2_export(data.encode(), today=TODAY, chunk_rows=2)
    assert list(result.duplicate_rows) == [
        {"row": 3, "duplicate_of_row": 2},
        {"row": 4, "duplicate_of_row": 1},
        {"row": 5, "duplicate_of_row": 1},
        {"row": 6, "duplicate_of_row": 1},
    ]
    assert result.accepted_records["source_row"].tolist() == [1, 2]


def test_a_ragged_rows_fields_past_the_header_go_to_the_quarantine_too() -> None:
    row = "MRN-1,SK00,Headache,Ayurveda,Mild,2024-01-15,HPR-1,"
    data = f"{HEADER}\n{row}\n{row.replace('MRN-1', 'MRN-2')},late note,x\nMRN-3,SK00\n".encode()
    result = validate_tm2_export(data, today=TODAY)
    assert (result.rows, result.accepted, result.rejected) == (3, 1, 2)
    longer, shorter = result.rejected_rows
    assert longer["values"]["patient_id"] == "MRN-2"
    assert longer["values"]["extra_fields"] == ["late note", "x"]
    assert "extra_fields" not in shorter["values"]  # nothing past the header: nothing to keep


def test_a_file_with_a_quote_that_swallowed_rows_is_refused_whole_never_accepted() -> None:
    # From a review: one stray quote merged three rows into one record with 7 fields (not ragged),
    # accepted with the third row's system, severity, date and practitioner: two rows vanished.
    # Refused like a quote never closed: one rejected record could hold thousands of rows.
    data = (
        b"patient_id,tm2_code,condition_name,system_type,severity,diagnosis_date,practitioner_id\n"
        b'MRN-01004,SS53,"Joint pain,Ayurveda,Mild,2025-01-01,HPR-1\n'
        b"MRN-01005,ST06,x,Siddha,Mild,2025-01-02,HPR-2\n"
        b'MRN-01007,SR82,y",Unani,Severe,2025-02-01,HPR-3\n'
        b"MRN-01008,SS53,w,Ayurveda,Mild,2025-03-01,HPR-4\n"
    )
    with pytest.raises(FileRefused) as refused:
        validate_tm2_export(data, today=TODAY)
    assert refused.value.message.startswith("a quoted value in data row 1 (condition_name) runs over 3 lines")


def test_a_name_too_long_to_be_a_name_is_that_rows_problem_only() -> None:
    long_name = "Joint pain " * 400  # 4,400 characters
    data = (
        "patient_id,tm2_code,condition_name,system_type,severity,diagnosis_date,practitioner_id\n"
        "MRN-01004,SS53,Joint pain,Ayurveda,Mild,2025-01-01,HPR-1\n"
        f"MRN-01005,SS53,{long_name},Ayurveda,Mild,2025-01-01,HPR-1\n"
    ).encode()
    result = validate_tm2_export(data, today=TODAY)
    assert (result.rows, result.accepted, result.rejected) == (2, 1, 1)
    [reject] = result.rejected_rows
    assert reject["reasons"] == [
        {
            "column": "condition_name",
            "check": "too_long",
            "message": "condition_name has 4399 characters (at most 4096)",
        }
    ]
