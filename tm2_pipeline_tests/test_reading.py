"""reading.py: encodings, delimiters, quoting, header mapping, ragged and blank rows, refusals."""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import lzma
import random
import zipfile

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tm2_pipeline import csv_blocks
from tm2_pipeline.reading import (
    FIELD_LIMIT_CHARS,
    TM2_COLUMNS,
    FileRefused,
    Tm2FileInfo,
    Tm2Rows,
    canonical_column_name,
    inspect_tm2_file,
    read_tm2_bytes,
)

HEADER = "patient_id,tm2_code,condition_name,system_type,severity,diagnosis_date,practitioner_id,namaste_code"
ROW = "MRN-4711,SK00,Headache,Ayurveda,Mild,2024-01-15,HPR-1,"


def refusal(data: bytes) -> FileRefused:
    with pytest.raises(FileRefused) as caught:
        read_tm2_bytes(data)
    return caught.value


def test_plain_utf8_file() -> None:
    raw = read_tm2_bytes(f"{HEADER}\n{ROW}\n".encode())
    assert (raw.encoding, raw.delimiter, raw.rows, raw.header_fields) == ("utf-8", ",", 1, 8)
    assert raw.ignored_columns == ()
    assert list(raw.frame.columns) == [*TM2_COLUMNS, "row", "field_count", "ragged"]
    assert raw.frame.iloc[0][list(TM2_COLUMNS)].tolist() == ROW.split(",")
    assert raw.frame.at[0, "row"] == 1
    assert not raw.frame.at[0, "ragged"]


def test_utf8_bom_crlf() -> None:
    raw = read_tm2_bytes(codecs.BOM_UTF8 + f"{HEADER}\r\n{ROW}\r\n".encode())
    assert raw.encoding == "utf-8-sig"
    assert raw.frame.at[0, "patient_id"] == "MRN-4711"  # BOM not glued to the first header name
    assert raw.frame.at[0, "namaste_code"] == ""  # no stray \r


@pytest.mark.parametrize(
    ("bom", "codec"), [(codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")]
)
def test_utf16_tab_separated_excel_unicode_text(bom: bytes, codec: str) -> None:
    text = HEADER.replace(",", "\t") + "\r\n" + "MRN-1\tST0V\tChange of temperament of psychic Rūḥ pattern\t"
    text += "Unani\tmild\t15/01/2024\tdr.meera@hpr.abdm\t\r\n"
    raw = read_tm2_bytes(bom + text.encode(codec))
    assert (raw.encoding, raw.delimiter, raw.rows) == (codec, "\t", 1)
    row = raw.frame.iloc[0]
    assert row["condition_name"] == "Change of temperament of psychic Rūḥ pattern"
    assert row["practitioner_id"] == "dr.meera@hpr.abdm"
    assert row["diagnosis_date"] == "15/01/2024"


def test_cp1252_semicolon_export() -> None:
    header = HEADER.replace(",", ";")
    text = f"{header}\r\nMRN-2;SK00;Névralgie’s crisis;Siddha;Modéré;15/01/2024;HPR-2;\r\n"
    data = text.encode("cp1252")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    raw = read_tm2_bytes(data)
    assert (raw.encoding, raw.delimiter) == ("cp1252", ";")
    assert raw.frame.at[0, "condition_name"] == "Névralgie’s crisis"  # 0x92 is U+2019 in cp1252, not latin-1
    assert raw.frame.at[0, "severity"] == "Modéré"


def test_quoted_fields_with_delimiters_quotes_and_line_breaks() -> None:
    quoted = '"Joint pain, with ""swelling""\r\nat night"'
    data = f"{HEADER}\r\nMRN-3,SK00,{quoted},Unani,,2024-01-15,HPR-3,\r\n{ROW}\r\n"
    raw = read_tm2_bytes(data.encode())
    assert raw.rows == 2
    assert raw.frame.at[0, "condition_name"] == 'Joint pain, with "swelling"\r\nat night'
    assert raw.frame["row"].tolist() == [1, 2]
    assert not raw.frame["ragged"].any()


def test_header_names_are_case_space_and_hyphen_insensitive() -> None:
    header = "\ufeff Patient ID ,TM2-Code,Condition Name,SYSTEM_TYPE,Severity,Diagnosis  Date,"
    header += "practitioner-id,"
    header += "Remarks,"
    raw = read_tm2_bytes(f"{header}\n{ROW.removesuffix(',')},free text,\n".encode())
    assert raw.frame.at[0, "patient_id"] == "MRN-4711"
    assert raw.frame.at[0, "diagnosis_date"] == "2024-01-15"
    assert raw.frame.at[0, "namaste_code"] == ""  # optional column absent: filled with ""
    assert raw.ignored_columns == ("Remarks", "(unnamed column 9)")


def test_canonical_column_name() -> None:
    assert canonical_column_name("  Patient-ID ") == "patient_id"
    assert canonical_column_name("ＴＭ２ Ｃｏｄｅ") == "tm2_code"  # full-width (NFKC)
    assert canonical_column_name("diagnosis__date") == "diagnosis_date"


def test_repeated_column_first_wins() -> None:
    raw = read_tm2_bytes(f"{HEADER},severity\n{ROW},Severe\n".encode())
    assert raw.frame.at[0, "severity"] == "Mild"
    assert raw.ignored_columns == ("severity",)


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_delimiter_detection(delimiter: str) -> None:
    row = "MRN-5,SK00,Headache; with, commas,Siddha,,2024-01-15,HPR-5,"
    fields = row.split(",")
    fields[2] = '"Headache; with, commas\tand tabs"'
    del fields[3]  # the split above cut the name in two
    text = HEADER.replace(",", delimiter) + "\n" + delimiter.join(fields) + "\n"
    raw = read_tm2_bytes(text.encode())
    assert raw.delimiter == delimiter
    assert raw.frame.at[0, "condition_name"] == "Headache; with, commas\tand tabs"
    assert raw.frame.at[0, "system_type"] == "Siddha"


def test_excel_sep_directive() -> None:
    raw = read_tm2_bytes(f"sep=;\n{HEADER.replace(',', ';')}\n{ROW.replace(',', ';')}\n".encode())
    assert raw.delimiter == ";"
    assert raw.rows == 1
    assert raw.frame.at[0, "row"] == 1


def test_ragged_rows_are_kept_and_flagged() -> None:
    data = f"{HEADER}\n{ROW}\nMRN-6,SK00,Headache\n{ROW},extra,fields\n".encode()
    raw = read_tm2_bytes(data)
    assert raw.rows == 3
    assert raw.frame["field_count"].tolist() == [8, 3, 10]
    assert raw.frame["ragged"].tolist() == [False, True, True]
    short = raw.frame.iloc[1]
    assert (short["patient_id"], short["condition_name"], short["severity"]) == ("MRN-6", "Headache", "")


def test_blank_lines_are_skipped_but_keep_their_row_number() -> None:
    data = f"\n\n{HEADER}\n{ROW}\n\n,,,,,,,\n  \n{ROW}\n\n".encode()
    raw = read_tm2_bytes(data)
    assert raw.rows == 2
    assert raw.frame["row"].tolist() == [1, 5]


def test_header_only_file_has_zero_rows() -> None:
    raw = read_tm2_bytes(f"{HEADER}\r\n".encode())
    assert raw.rows == 0
    assert list(raw.frame.columns) == [*TM2_COLUMNS, "row", "field_count", "ragged"]
    assert str(raw.frame["row"].dtype) == "int64"


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"   \r\n\t\n", codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF8 + b"\r\n\r\n", b"\n,,,\n"],
)
def test_empty_files_are_refused(data: bytes) -> None:
    assert refusal(data).reason == "empty"


def test_binary_files_are_refused() -> None:
    assert refusal(b"patient_id\x00tm2_code\x00\x01\x02").reason == "binary"
    assert refusal(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100).reason == "binary"
    assert refusal(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj").reason == "binary"
    noise = random.Random(7).randbytes(4096)
    assert refusal(noise.replace(b"\x00", b"\x01")).reason == "binary"
    # UTF-16 without a byte-order mark is NUL-laden: refused, with a hint.
    refused = refusal(f"{HEADER}\n{ROW}\n".encode("utf-16-le"))
    assert refused.reason == "binary"
    assert "UTF-16" in refused.message


def test_compressed_files_are_refused() -> None:
    content = f"{HEADER}\n{ROW}\n".encode()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("export.csv", content)
    for data in (gzip.compress(content), archive.getvalue(), bz2.compress(content), lzma.compress(content)):
        refused = refusal(data)
        assert refused.reason == "compressed"
        assert "MRN-4711" not in refused.message
    assert "xlsx" in refusal(archive.getvalue()).message


def test_utf8_text_with_a_stray_cp1252_byte_is_refused_not_garbled() -> None:
    # Decoded as cp1252, "Pé-1" would read "PÃ©-1": another record key for the same diagnosis.
    data = (
        f"{HEADER}\n{ROW.replace('MRN-4711', 'Pé-1')}\n".encode()
        + b"MRN-2,SK00,Caf\xe9,Unani,,2024-01-15,H,\n"
    )
    refused = refusal(data)
    assert (
        refused.reason == "encoding" and "mixes UTF-8 text with bytes that are not UTF-8" in refused.message
    )
    # Windows-1252 alone still reads.
    assert (
        read_tm2_bytes(f"{HEADER}\n{ROW.replace('Headache', 'Café')}\n".encode("cp1252")).encoding == "cp1252"
    )


def test_undecodable_bytes_are_refused_as_encoding() -> None:
    # 0x81 and 0x9D are undefined in cp1252 and invalid as UTF-8 lead bytes.
    assert (
        refusal(f"{HEADER}\n".encode() + b"MRN-1,SK00,\x81\x9d,Unani,,2024-01-15,H,\n").reason == "encoding"
    )
    assert refusal(codecs.BOM_UTF8 + HEADER.encode() + b"\n\xe9t\xe9\n").reason == "encoding"


def test_missing_columns_message_names_missing_and_found_columns() -> None:
    header = "Patient ID,tm2_code,condition_name,severity,diagnosis_date,Doctor"
    refused = refusal(f"{header}\nMRN-4711,SK00,Headache,Mild,2024-01-15,HPR-1\n".encode())
    assert refused.reason == "missing_columns"
    assert "missing required column(s): system_type, practitioner_id" in refused.message
    assert (
        "found columns: patient_id, tm2_code, condition_name, severity, diagnosis_date, doctor"
        in refused.message
    )
    assert "MRN-4711" not in refused.message


def test_headerless_file_does_not_echo_its_first_row() -> None:
    refused = refusal(f"{ROW}\n{ROW}\n".encode())
    assert refused.reason == "missing_columns"
    assert "none is a required column" in refused.message
    assert "MRN-4711" not in refused.message and "HPR-1" not in refused.message


def test_a_data_row_run_into_the_header_line_is_not_echoed_as_column_names() -> None:
    # The header's line break lost (files concatenated): the first row's cells become "columns".
    row = "MRN-4711,SK00,Headache,Ayurveda,Mild,2024-01-15,HPR-1,AAA-1"
    raw = read_tm2_bytes(f"{HEADER},Remarks,रोगी का नाम{row}\n{ROW}\n".encode())
    assert raw.ignored_columns == (
        "Remarks",
        "(column 10: name not shown)",  # "रोगी का नामMRN-4711"
        "(column 11: name not shown)",  # SK00
        "Headache",  # no digits: reads like a name
        "Ayurveda",
        "Mild",
        "(column 15: name not shown)",
        "(column 16: name not shown)",
        "(column 17: name not shown)",
    )
    first_six = HEADER.removesuffix(",practitioner_id,namaste_code")
    refused = refusal(f"{first_six},practitioner_id{row}\n".encode())
    assert refused.reason == "missing_columns"
    assert refused.message.endswith(
        "found columns: patient_id, tm2_code, condition_name, system_type, severity, diagnosis_date, "
        "(column 7), (column 8), headache, ayurveda, mild, (column 12), (column 13), (column 14)"
    )
    assert "4711" not in refused.message and "HPR" not in refused.message


@pytest.mark.parametrize("column", ["namaste_code", "condition_name"])
def test_a_quote_never_closed_is_refused_not_read_as_one_cell(column: str) -> None:
    # The csv module would read everything after it as one cell: rows 3-5 would vanish, and their
    # patients' data would end up in row 2's record.
    fields = ROW.split(",")
    fields[HEADER.split(",").index(column)] = '"AAA-1'
    rows = [ROW, ",".join(fields), ROW.replace("4711", "4712"), ROW.replace("4711", "4713"), ROW]
    refused = refusal(("\n".join([HEADER, *rows]) + "\n").encode())
    assert refused.reason == "malformed"
    assert "opened in data row 2 is never closed" in refused.message
    assert "4712" not in refused.message


def test_a_file_ending_without_a_line_break_or_with_quoted_line_breaks_keeps_every_row() -> None:
    quoted = ROW.replace("Headache", '"Head\nache"')
    raw = read_tm2_bytes(f"{HEADER}\n{quoted}\n{ROW}".encode())
    assert list(raw.frame["row"]) == [1, 2]
    assert raw.frame.at[0, "condition_name"] == "Head\nache"


def test_a_first_line_beyond_the_csv_field_limit_is_refused_as_malformed() -> None:
    refused = refusal(b"a" * (FIELD_LIMIT_CHARS + 1) + b"\n")
    assert refused.reason == "malformed"
    assert refused.message == (
        "the first line cannot be read as CSV: a value longer than 16,777,216 characters "
        "(a quote opened and never closed?)"
    )


def test_a_value_past_the_csv_modules_default_limit_is_read_a_runaway_one_refused() -> None:
    # From a review: one 200,000-character name refused the whole file (csv's default 131,072).
    long_name = ROW.replace("Headache", "a" * 200_000)
    raw = read_tm2_bytes(f"{HEADER}\n{ROW}\n{long_name}\n{ROW}\n".encode())
    assert raw.rows == 3 and len(raw.frame.at[1, "condition_name"]) == 200_000
    runaway = ROW.replace("Headache", "a" * (FIELD_LIMIT_CHARS + 1))
    refused = refusal(f"{HEADER}\n{ROW}\n{runaway}\n".encode())
    assert refused.message.startswith("the CSV structure breaks at data row 2: a value longer than")


def test_runaway_quote_beyond_the_csv_field_limit_is_refused_as_malformed() -> None:
    data = f'{HEADER}\n{ROW}\nMRN-9,SK00,"never closed,Unani\n'.encode() + b"x" * 200_000
    refused = refusal(data)
    assert refused.reason == "malformed"
    assert "data row 2" in refused.message


# --- inspection without parsing, chunked reading ------------------------------------------------

REFUSED_FILES = [
    b"",
    b"   \r\n\t\n",
    codecs.BOM_UTF8,
    codecs.BOM_UTF16_LE,
    b"\n,,,\n",
    b"patient_id\x00tm2_code\x00\x01\x02",
    b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj",
    gzip.compress(f"{HEADER}\n{ROW}\n".encode()),
    bz2.compress(f"{HEADER}\n{ROW}\n".encode()),
    f"{HEADER}\n{ROW}\n".encode("utf-16-le"),
    f"{HEADER}\n".encode() + b"MRN-1,SK00,\x81\x9d,Unani,,2024-01-15,H,\n",
    codecs.BOM_UTF8 + HEADER.encode() + b"\n\xe9t\xe9\n",
    b"Patient ID,tm2_code,condition_name,severity,diagnosis_date,Doctor\nMRN-4711,SK00,Headache,Mild,x,H\n",
    f"{ROW}\n{ROW}\n".encode(),
]


@pytest.mark.parametrize("data", REFUSED_FILES)
def test_inspect_refuses_exactly_like_read(data: bytes) -> None:
    with pytest.raises(FileRefused) as inspected:
        inspect_tm2_file(data)
    read = refusal(data)
    assert (inspected.value.reason, inspected.value.message) == (read.reason, read.message)


def test_inspect_describes_a_readable_file_like_read() -> None:
    data = f"sep=;\n{HEADER.replace(',', ';')};Remarks\n{ROW.replace(',', ';')};x\n".encode("cp1252")
    info = inspect_tm2_file(data)
    raw = read_tm2_bytes(data)
    assert info == Tm2FileInfo(raw.encoding, raw.delimiter, raw.ignored_columns, raw.header_fields)
    assert (info.encoding, info.delimiter, info.ignored_columns) == ("utf-8", ";", ("Remarks",))


def test_inspect_does_not_see_a_break_further_down() -> None:
    data = f'{HEADER}\n{ROW}\nMRN-9,SK00,"never closed,Unani\n'.encode() + b"x" * 200_000
    assert inspect_tm2_file(data).header_fields == 8
    assert refusal(data).reason == "malformed"


@given(st.lists(st.sampled_from(["a", "b,c", '"q\r\nr"', "\r", "\n", "\r\n", ",", " "]), max_size=40))
def test_lines_are_those_of_one_stringio(parts: list[str]) -> None:
    text = "".join(parts)

    def lines(*, cr_ends_lines: bool) -> list[str]:
        splitter = csv_blocks.LineSplitter(cr_ends_lines=cr_ends_lines)
        return [line.replace(csv_blocks.LONE_CR_MARK, "\r") for line in csv_blocks.text_lines(text, splitter)]

    old_mac, other = list(io.StringIO(text, newline="")), list(io.StringIO(text, newline="\n"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csv_blocks, "BLOCK_CHARS", 3)
        assert lines(cr_ends_lines=True) == old_mac
        assert lines(cr_ends_lines=False) == other
    assert lines(cr_ends_lines=True) == old_mac
    assert lines(cr_ends_lines=False) == other


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_cr_alone_inside_a_row_is_part_of_its_field(newline: str) -> None:
    # A value pasted from an old Mac app, unquoted: cutting the row there would accept
    # "HPR-" as the practitioner and reject "3" as a row of its own.
    rows = [ROW, ROW.replace("Headache", "Head\rache").replace(",HPR-", ",HPR-\r3")]
    data = (newline.join([HEADER, *rows, ROW]) + newline + "\r").encode()
    frame = read_tm2_bytes(data).frame
    assert frame["row"].tolist() == [1, 2, 3]
    assert not frame["ragged"].any()
    assert frame.at[1, "condition_name"] == "Head\rache"
    assert frame.at[1, "practitioner_id"].startswith("HPR-\r3")
    assert csv_blocks.LONE_CR_MARK not in "".join(frame["condition_name"])


def test_an_old_mac_export_ends_its_lines_in_cr_alone() -> None:
    data = ("\r".join([HEADER, ROW, ROW.replace("4711", "4712")]) + "\r").encode("cp1252")
    frame = read_tm2_bytes(data).frame
    assert frame["patient_id"].str.startswith("MRN-").all()
    assert (frame["row"].tolist(), frame["ragged"].any()) == ([1, 2], False)


def test_chunks_add_up_to_the_whole_table() -> None:
    rows = [ROW, "", "MRN-6,SK00,Headache", ",,,,,,,", f"{ROW},extra", ROW.replace("4711", "4712")] * 5
    data = (HEADER + "\r\n" + "\r\n".join(rows) + "\r\n").encode()
    whole = read_tm2_bytes(data).frame
    for size in (1, 2, 3, 7, 1000):
        tables = list(Tm2Rows(data).chunks(size))
        assert all(table.rows <= size for table in tables)
        joined = pd.concat([table.frame for table in tables], ignore_index=True)
        pd.testing.assert_frame_equal(joined, whole)
    assert len(list(Tm2Rows(data).chunks(len(rows)))) == 1  # no empty table after an exact fit
    (empty,) = Tm2Rows(f"{HEADER}\n".encode()).chunks(5)
    assert empty.rows == 0


def test_a_break_in_a_later_chunk_names_its_data_row() -> None:
    data = f'{HEADER}\n{ROW}\n\n{ROW}\nMRN-9,SK00,"never closed,Unani\n'.encode() + b"x" * 200_000
    with pytest.raises(FileRefused) as caught:
        list(Tm2Rows(data).chunks(2))
    assert caught.value.message == refusal(data).message
    assert "data row 4" in caught.value.message


_CELL = st.text(alphabet='ab,;"\r\n é€वा\x1a\ufeff', max_size=6)


@given(
    st.lists(st.lists(_CELL, min_size=8, max_size=8), max_size=6),
    st.sampled_from(["", "\ufeff", "\ufeff\ufeff"]),
    st.sampled_from(["", "sep=,\r\n"]),
    st.sampled_from(["", "\x1a", "\x1a\x1a"]),
    st.sampled_from(["\r\n", "\n", "\r"]),
)
def test_rows_decoded_block_by_block_equal_the_whole_text(
    rows: list[list[str]], boms: str, directive: str, eofs: str, newline: str
) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=newline).writerows([HEADER.split(","), *rows])
    text = boms + directive + buffer.getvalue() + eofs
    reference = read_tm2_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))  # decoded as a whole
    encodings = [codecs.BOM_UTF8 + text.encode(), text.encode()]
    if all(ch not in text for ch in "€वा\ufeff"):
        encodings.append(text.encode("cp1252"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csv_blocks, "BLOCK_CHARS", 4)  # many block cuts
        for data in encodings:
            pd.testing.assert_frame_equal(read_tm2_bytes(data).frame, reference.frame)


def test_a_sep_line_ended_by_crlf_does_not_decide_for_rows_ended_by_cr_alone() -> None:
    # Found by the property test above in CI: the rows were read as one line, their quotes unbalanced.
    for rows in ('",\n",,,,,,,\r', '",",,,,,,,\r'):
        raw = read_tm2_bytes(f"sep=,\r\n{HEADER}\r{rows}".encode())
        assert raw.rows == 1 and raw.frame.at[0, "patient_id"] in (",\n", ",")


class _RecordedReads(io.BytesIO):
    """A file that remembers how much each read asked for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int | None] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.sizes.append(size)
        return super().read(size)


@pytest.mark.parametrize("encode", [str.encode, lambda text: codecs.BOM_UTF8 + text.encode("utf-8")])
def test_a_file_is_read_a_block_at_a_time(encode) -> None:
    rows = [ROW.replace("Headache", f"Śiro-roga {i}") for i in range(3000)]
    data = encode("\r\n".join([HEADER, *rows]) + "\r\n")
    stream = _RecordedReads(data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csv_blocks, "BLOCK_CHARS", 1000)
        tables = list(Tm2Rows(stream).chunks(500))
    assert all(size is not None and 0 < size <= 4096 for size in stream.sizes)  # never the whole file
    assert len(data) > 100_000
    whole = pd.concat([table.frame for table in tables], ignore_index=True)
    pd.testing.assert_frame_equal(whole, read_tm2_bytes(data).frame)
    assert whole["condition_name"].iloc[-1] == "Śiro-roga 2999"


def test_long_runs_of_byte_order_and_end_of_file_marks_are_not_text() -> None:
    text = f"{HEADER}\n{ROW}\n"
    plain = read_tm2_bytes(text.encode()).frame
    padded = codecs.BOM_UTF8 * 2000 + text.encode() + b"\x1a" * 10_000
    pd.testing.assert_frame_equal(read_tm2_bytes(padded).frame, plain)
    assert refusal(codecs.BOM_UTF8 * 2000 + b"\x1a" * 10_000).reason == "empty"


# --- a quote opened by mistake ------------------------------------------------------------------

SEVEN = "patient_id,tm2_code,condition_name,system_type,severity,diagnosis_date,practitioner_id"


@pytest.mark.parametrize(
    ("rows", "row", "column", "lines"),
    [
        # A stray quote in condition_name, closed by a quote two rows later: whole rows inside.
        (
            'MRN-1,SS53,"Joint pain,Ayurveda,Mild,2025-01-01,HPR-1\n'
            "MRN-2,ST06,x,Siddha,Mild,2025-01-02,HPR-2\n"
            'MRN-3,SR82,y",Unani,Severe,2025-02-01,HPR-3\n',
            1,
            "condition_name",
            3,
        ),
        # Closed by the next row's own quote: only the start of that row inside.
        (
            "MRN-0,SS53,x,Ayurveda,Mild,2025-01-01,HPR-1\r\n"
            'MRN-1,SS53,"Joint pain,Ayurveda,Mild,2025-01-01,HPR-1\r\n'
            'MRN-3,SR82,"y ""z""",Unani,Severe,2025-02-01,HPR-3\r\n',
            2,
            "condition_name",
            2,
        ),
        # In the last column, on a semicolon export.
        (
            'MRN-1;SS53;x;Ayurveda;Mild;2025-01-01;"HPR-1\nMRN-2;ST06;x;Siddha;Mild;2025-01-02;HPR-2"\n',
            1,
            "practitioner_id",
            2,
        ),
        # From a review: the row with the stray quote is itself a field short (or long): told by
        # the code-shaped value where the rows inside have their codes.
        (
            'MRN-1,SS53,"Joint pain,Ayurveda,Mild,2025-01-01\n'
            "MRN-2,ST06,x,Siddha,Mild,2025-01-02,HPR-2\n"
            'MRN-3,SR82,y",Unani,Severe,2025-02-01,HPR-3\n',
            1,
            "condition_name",
            3,
        ),
        (
            'MRN-1,SS53,"Joint pain,Ayurveda,Mild,2025-01-01,HPR-1,\n'
            'MRN-3,SR82,y",Unani,Severe,2025-02-01,HPR-3\n',
            1,
            "condition_name",
            2,
        ),
    ],
)
def test_a_quote_opened_by_mistake_refuses_the_file_naming_its_row(rows, row, column, lines) -> None:
    delimiter = ";" if ";" in rows else ","
    refused = refusal(f"{SEVEN.replace(',', delimiter)}\n{rows}".encode())
    assert refused.reason == "malformed"
    assert refused.message.startswith(
        f"a quoted value in data row {row} ({column}) runs over {lines} lines that read like rows of the file"
    )
    assert "MRN-" not in refused.message


@pytest.mark.parametrize(
    "value",
    [
        '"Joint pain,\nwith swelling, redness"',
        '"Pain\nin the knee\nand the hip"',
        '"Notes: a, b, c\nd, e\n"',
        '"first line\nSK25 was considered, then, ruled, out, on, review"',
    ],
)
def test_a_quoted_value_meant_to_span_lines_is_read_as_it_is(value) -> None:
    raw = read_tm2_bytes(f"{SEVEN}\nMRN-1,SS53,{value},Ayurveda,Mild,2025-01-01,HPR-1\n".encode())
    assert raw.rows == 1 and not raw.frame["ragged"].any()
    assert raw.frame.at[0, "condition_name"] == value.strip('"')
