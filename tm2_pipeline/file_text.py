"""Bytes of a clinic export -> its encoding and its decoded lines, or `FileRefused` when it is not text.

- Refused before decoding: compressed archives (gzip, zip — an .xlsx workbook is one —, bz2, xz, 7z,
  zstd), known binary documents (old .xls/OLE2, PDF), NUL bytes outside UTF-16, and files where more
  than 5% of the bytes are control characters ("mostly non-text").
- Encoding: a byte-order mark decides (UTF-8, UTF-16 LE/BE: Excel "Unicode text"); otherwise strict
  UTF-8, then cp1252 (old Excel; it also holds every printable Latin-1 character). UTF-8 text with
  stray other bytes (a mixed file) and bytes neither can decode are refused as `encoding`.
- A file is read a block at a time; only UTF-16 is decoded whole (Excel caps it at 1,048,576 rows).
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterator
from typing import BinaryIO

from tm2_pipeline import csv_blocks
from tm2_pipeline.csv_blocks import LineSplitter, first_line_ends_in_cr_alone, text_lines

REFUSAL_REASONS = ("empty", "binary", "compressed", "encoding", "missing_columns", "malformed")

_COMPRESSED_MAGIC = (
    (b"\x1f\x8b", "a gzip archive"),
    (b"PK\x03\x04", "a zip archive (an .xlsx workbook is one: export the sheet as CSV)"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive"),
)
_BZIP2_MAGIC = re.compile(rb"BZh[1-9]1AY&SY")
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
_BINARY_MAGIC = (
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "an OLE2 document (an old .xls workbook?): export the sheet as CSV",
    ),
    (b"%PDF-", "a PDF document"),
)
# C0 control bytes that never appear in text (tab, LF, FF, CR and the DOS end-of-file mark do).
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 26)) + b"\x7f"
_NON_CONTROL_BYTES = bytes(b for b in range(256) if b not in _CONTROL_BYTES)


def _cp1252_defines(byte: int) -> bool:
    try:
        bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:
        return False
    return True


_CP1252_DEFINED_BYTES = bytes(filter(_cp1252_defines, range(256)))  # all but five
_CONTROL_TEXT = re.compile("[" + re.escape(_CONTROL_BYTES.decode("ascii")) + "]")
_MAX_CONTROL_SHARE = 0.05
# Enough of the file's start for the magic numbers and byte-order marks; also the tail step.
_HEAD_BYTES = 4096
# Encodings whose bytes are decoded block by block (utf-8-sig: the BOMs are skipped by offset).
_BLOCK_CODECS = {"utf-8": "utf-8", "utf-8-sig": "utf-8", "cp1252": "cp1252"}


class FileRefused(Exception):
    """The whole file cannot be read as a TM2 export; `reason` is one of `REFUSAL_REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def decoded_lines(stream: BinaryIO) -> tuple[str, Iterator[str], LineSplitter]:
    """The encoding of a seekable binary file, its lines, decoded as they are read (UTF-16: decoded
    whole), and the splitter that cut them (its `restore` puts back a CR alone inside a line);
    raises `FileRefused` for anything that is not text in a known encoding."""
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    head = stream.read(_HEAD_BYTES)
    _refuse_non_text(head, size)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        stream.seek(0)
        return _utf16_lines(stream.read())
    encoding = _scan_encoding(stream, head)
    # The head's decoding may end mid-character; only its line ends are looked at.
    splitter = LineSplitter(cr_ends_lines=first_line_ends_in_cr_alone(head.decode("latin-1")))
    return encoding, _byte_lines(stream, encoding, size, splitter), splitter


def _refuse_non_text(head: bytes, size: int) -> None:
    if not size:
        raise FileRefused("empty", "the file is empty (0 bytes or only whitespace)")
    for magic, kind in _COMPRESSED_MAGIC:
        if head.startswith(magic):
            raise FileRefused("compressed", f"the file is {kind}, not a CSV text file")
    if _BZIP2_MAGIC.match(head):
        raise FileRefused("compressed", "the file is a bzip2 archive, not a CSV text file")
    for magic, kind in _BINARY_MAGIC:
        if head.startswith(magic):
            raise FileRefused("binary", f"the file is {kind}, not a CSV text file")


def _utf16_lines(data: bytes) -> tuple[str, Iterator[str], LineSplitter]:
    """A UTF-16 export (byte-order mark first), decoded whole: its encoding, lines and splitter."""
    encoding = "utf-16-le" if data.startswith(codecs.BOM_UTF16_LE) else "utf-16-be"
    try:
        text = data[2:].decode(encoding)
    except UnicodeDecodeError:
        raise FileRefused(
            "encoding", "the file starts with a UTF-16 byte-order mark but is not UTF-16"
        ) from None
    if "\x00" in text or _control_share(len(_CONTROL_TEXT.findall(text)), len(text)):
        raise FileRefused("binary", "the file is not text (NUL or control characters in UTF-16 data)")
    text = text.lstrip("\ufeff").rstrip("\x1a")
    splitter = LineSplitter(cr_ends_lines=first_line_ends_in_cr_alone(text[:_HEAD_BYTES]))
    return encoding, text_lines(text, splitter), splitter


def _scan_encoding(stream: BinaryIO, head: bytes) -> str:
    """Read the whole file once, a block at a time: refuse what is not text, and name the encoding
    (utf-8-sig, utf-8 or cp1252) in which every byte decodes."""
    stream.seek(0)
    utf8 = codecs.getincrementaldecoder("utf-8")()
    is_utf8, is_cp1252, only_spaces, control_bytes, size = True, True, True, 0, 0
    has_utf8_characters = False  # multi-byte UTF-8 sequences: no real cp1252 text has them
    while block := stream.read(csv_blocks.BLOCK_CHARS):
        if b"\x00" in block:
            raise FileRefused(
                "binary",
                "the file contains NUL bytes: it is binary, or UTF-16 without a byte-order mark "
                "(re-export as CSV UTF-8)",
            )
        size += len(block)
        only_spaces = only_spaces and block.isspace()
        control_bytes += len(block.translate(None, _NON_CONTROL_BYTES))
        is_cp1252 = is_cp1252 and not block.translate(None, _CP1252_DEFINED_BYTES)
        has_utf8_characters = has_utf8_characters or _UTF8_MULTIBYTE.search(block) is not None
        if is_utf8:
            try:
                utf8.decode(block)  # the text is not kept: lines are decoded again as they are read
            except UnicodeDecodeError:
                is_utf8 = False
    if is_utf8:
        try:
            utf8.decode(b"", final=True)  # a character cut off by the end of the file
        except UnicodeDecodeError:
            is_utf8 = False
    if only_spaces:
        raise FileRefused("empty", "the file is empty (0 bytes or only whitespace)")
    if _control_share(control_bytes, size):
        raise FileRefused("binary", "the file is mostly non-text (control bytes), not a CSV export")
    if head.startswith(codecs.BOM_UTF8):
        if not is_utf8:
            raise FileRefused("encoding", "the file starts with a UTF-8 byte-order mark but is not UTF-8")
        return "utf-8-sig"
    if is_utf8:
        return "utf-8"
    if has_utf8_characters:
        # Decoding it all as cp1252 would garble the UTF-8 part, and change its record keys.
        raise FileRefused(
            "encoding",
            "the file mixes UTF-8 text with bytes that are not UTF-8 (rows pasted from another "
            "export?): re-export it as CSV UTF-8",
        )
    if is_cp1252:
        return "cp1252"
    raise FileRefused("encoding", "the file is neither UTF-8, UTF-16 (with BOM) nor Windows-1252 text")


def _byte_lines(stream: BinaryIO, encoding: str, size: int, splitter: LineSplitter) -> Iterator[str]:
    """The text's lines, decoded block by block from the file; leading byte-order marks and trailing
    DOS end-of-file marks are not part of it."""
    start = 0
    if encoding == "utf-8-sig":
        stream.seek(0)
        while stream.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8:
            start += len(codecs.BOM_UTF8)
    end = size
    while end > start:
        stream.seek(max(start, end - _HEAD_BYTES))
        tail = stream.read(end - stream.tell())
        end -= len(tail) - len(tail.rstrip(b"\x1a"))
        if tail.rstrip(b"\x1a"):
            break
    return csv_blocks.byte_lines(stream, start, end, _BLOCK_CODECS[encoding], splitter)


def _control_share(control_count: int, total: int) -> bool:
    return total > 0 and control_count / total > _MAX_CONTROL_SHARE
