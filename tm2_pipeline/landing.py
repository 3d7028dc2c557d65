"""Landed files on disk: hashed and copied by content (`copy_by_content`), and where a file goes once
its fate is known: `processed/<date>/` or `failed/` with `<archived name>.error.txt`.

Nothing is ever deleted: a name already taken by different content gets the content hash appended.
What the sensor sees in the landing dir, and remembers between ticks: `landing_watch.py`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

CHUNK = 1 << 20

# The longest name derived from a landed file's name is its validation staging table,
# `<name>.parquet.<run id, 36 bytes>.partial`: 53 bytes more. File names may have 255 bytes.
MAX_NAME_BYTES = 200


class ContentChanged(Exception):
    """The file's bytes are not those its run was started for: it changed after it was seen."""


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_by_content(source: Path, directory: Path, expected_sha256: str | None = None) -> str:
    """Copy `source` to `directory/<sha256 of the bytes copied>`, hashing as it copies; returns the
    hash. The copy is whole or absent under its final name. With `expected_sha256`, bytes hashing
    otherwise are not kept: ContentChanged."""
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".incoming-", delete=False) as target:
        try:
            with source.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
                    target.write(chunk)
        except BaseException:
            os.unlink(target.name)
            raise
    sha256 = digest.hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256:
        os.unlink(target.name)
        raise ContentChanged(f"expected sha256 {expected_sha256[:12]}, copied {sha256[:12]}")
    os.replace(target.name, directory / sha256)
    return sha256


def bounded_name(name: str, sha256: str) -> str:
    """`name` if it is UTF-8 of at most MAX_NAME_BYTES; else its start, made valid UTF-8, plus the
    content hash: a refused name must still leave room for `.<hash>` and `.error.txt` in failed/."""
    try:
        if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
            return name
    except UnicodeEncodeError:  # bytes that are not UTF-8, decoded by the OS with surrogateescape
        pass
    readable = os.fsencode(name).decode("utf-8", errors="replace").encode("utf-8")
    start = readable[: MAX_NAME_BYTES - 13].decode("utf-8", errors="ignore")  # no character cut in half
    return f"{start}.{sha256[:12]}"


def _free_target(directory: Path, name: str, sha256: str) -> Path:
    target = directory / name
    if not target.exists() or sha256_of_file(target) == sha256:
        return target
    stem, dot, suffix = name.partition(".")
    return directory / f"{stem}.{sha256[:12]}{dot}{suffix}"


def archive(
    source: Path, directory: Path, sha256: str, *, keep_source: bool, name: str | None = None
) -> Path:
    """Move (or copy, when `keep_source`) `source` into `directory` as `name` (default: its own name),
    without overwriting other content."""
    directory.mkdir(parents=True, exist_ok=True)
    target = _free_target(directory, name or source.name, sha256)
    if keep_source:
        shutil.copyfile(source, target)
    else:
        shutil.move(source, target)  # a rename on the same filesystem, copy-then-delete across
    return target


def write_error_note(failed_dir: Path, file_name: str, message: str) -> Path:
    """`failed/<file_name>.error.txt`: name it after the archived file, so each version keeps its own."""
    failed_dir.mkdir(parents=True, exist_ok=True)
    note = failed_dir / f"{file_name}.error.txt"
    note.write_text(message.rstrip() + "\n", encoding="utf-8")
    return note
