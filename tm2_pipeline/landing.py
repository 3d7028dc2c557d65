"""Landed files on disk: hashed and copied by content (`copy_by_content`), and where a file goes once
its fate is known: `processed/<date>/` or `failed/` with `<name>.error.txt`.

Nothing is ever deleted: a name already taken by different content gets the content hash appended.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

CHUNK = 1 << 20


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_by_content(source: Path, directory: Path) -> str:
    """Copy `source` to `directory/<sha256 of the bytes copied>`, hashing as it copies; returns the
    hash. The copy is whole or absent under its final name."""
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
    os.replace(target.name, directory / sha256)
    return sha256


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
    failed_dir.mkdir(parents=True, exist_ok=True)
    note = failed_dir / f"{file_name}.error.txt"
    note.write_text(message.rstrip() + "\n", encoding="utf-8")
    return note


IGNORED_SUFFIXES = (".part", ".tmp")


def scan_landing_dir(landing_dir: Path) -> dict[str, tuple[int, int]]:
    """name -> (size, mtime_ns) of candidate files; dotfiles and partial uploads are not candidates."""
    if not landing_dir.is_dir():
        return {}
    found: dict[str, tuple[int, int]] = {}
    with os.scandir(landing_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") or entry.name.endswith(IGNORED_SUFFIXES):
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
            found[entry.name] = (stat.st_size, stat.st_mtime_ns)
    return found


def stable_files(current: dict[str, tuple[int, int]], previous: dict[str, tuple[int, int]]) -> list[str]:
    """Files whose size and mtime did not change since the previous look: their writer is done.

    mtime order is never used: an atomic `mv` keeps a file's old mtime.
    """
    return sorted(name for name, seen in current.items() if previous.get(name) == seen)
