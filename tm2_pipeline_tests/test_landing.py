import hashlib
import os
from pathlib import Path

import pytest

from tm2_pipeline.landing import ContentChanged, archive, copy_by_content, sha256_of_file
from tm2_pipeline.landing_watch import (
    RESUME_KEY,
    LandedFile,
    next_in_line,
    read_cursor,
    remembered,
    scan_landing_dir,
    stable_files,
    write_cursor,
)


def test_scan_ignores_dotfiles_partials_and_directories(tmp_path):
    for name in ("a.csv", ".hidden.csv", "b.csv.part", "c.tmp"):
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    assert set(scan_landing_dir(tmp_path)) == {"a.csv"}
    assert scan_landing_dir(tmp_path / "missing") == {}


def test_scan_ignores_lock_files_and_unfinished_downloads_and_uploads(tmp_path):
    temporary = [
        "~$clinic.csv",  # Excel's lock file
        "clinic.csv.filepart",  # WinSCP
        "clinic.csv.crdownload",  # Chrome
        "clinic.csv.partial",
        "clinic.csv.swp",
        "clinic.csv~",
        "clinic.csv.!sync",
        "Thumbs.db",
        "desktop.ini",
        "CLINIC.CSV.PART",
    ]
    for name in [*temporary, "clinic.csv", "export.tsv", "notes.xlsx"]:
        (tmp_path / name).write_text("x")
    # Any other file is a candidate: a file that is no TM2 export is refused with a note, not ignored.
    assert set(scan_landing_dir(tmp_path)) == {"clinic.csv", "export.tsv", "notes.xlsx"}


def test_a_hash_is_remembered_while_the_file_is_unchanged_and_its_arrival_while_it_stays():
    previous = {
        "same.csv": LandedFile((10, 1, 1), sha256="a" * 64, arrived_after_run=7),
        "rewritten.csv": LandedFile((10, 1, 1), sha256="b" * 64, arrived_after_run=3),
    }
    current = {"same.csv": (10, 1, 1), "rewritten.csv": (10, 2, 2), "new.csv": (1, 1, 1)}
    files = remembered(current, previous)
    assert files["same.csv"] == previous["same.csv"]
    assert files["rewritten.csv"] == LandedFile((10, 2, 2), sha256=None, arrived_after_run=3)
    assert files["new.csv"] == LandedFile((1, 1, 1))
    assert read_cursor(write_cursor(files)) == (files, None)
    assert read_cursor(write_cursor(files, (1, "new.csv"))) == (files, (1, "new.csv"))


def test_an_older_cursor_is_read_as_files_not_seen_yet():
    # Before hashes were kept: name -> [size, mtime]. Such a file waits one more tick.
    assert read_cursor('{"clinic.csv": [10, 1]}') == ({}, None)
    assert read_cursor(None) == ({}, None)
    # The sensor before `next_in_line` reads a cursor written since (a rollback): the line's start,
    # the one entry that is not an object, is no file to it.
    assert "/" in RESUME_KEY  # no file name contains one


def test_a_file_is_ready_only_when_unchanged_since_the_last_look():
    previous = {"done.csv": (10, 1, 1), "growing.csv": (5, 1, 1)}
    current = {"done.csv": (10, 1, 1), "growing.csv": (9, 2, 2), "new.csv": (3, 3, 3)}
    assert stable_files(current, previous) == ["done.csv"]


def test_old_mtime_after_atomic_move_is_still_picked_up():
    # `mv` keeps the old mtime: readiness compares with the previous tick, never with a high-water mark.
    previous = {"late.csv": (7, 100, 100)}
    assert stable_files({"late.csv": (7, 100, 100), "x.csv": (1, 999, 999)}, previous) == ["late.csv"]


def test_ready_files_come_in_order_of_arrival_not_of_name_nor_of_mtime():
    # (size, mtime_ns, ctime_ns): zz.csv landed first; a.csv was moved in later with an older mtime
    # (`mv`, `cp -p`); b.csv and c.csv landed together (same ctime): their names decide.
    seen = {"zz.csv": (5, 300, 300), "a.csv": (5, 100, 400), "c.csv": (5, 500, 500), "b.csv": (5, 500, 500)}
    assert stable_files(seen, dict(seen)) == ["zz.csv", "a.csv", "b.csv", "c.csv"]


def test_files_that_could_not_be_read_go_to_the_back_of_the_line():
    # (size, mtime_ns, ctime_ns): l1..l3 landed first and cannot be read; r1, r2 came later.
    waiting = {name: (1, ctime, ctime) for ctime, name in enumerate(["l1", "l2", "l3", "r1", "r2"])}
    watched, resume = next_in_line(waiting, 3, set(), None)
    assert watched == {"l1", "l2", "l3"} and resume is None
    # l1 and l2 were tried and could not be read; l3 was not tried yet (it joined the watched late).
    watched, resume = next_in_line(waiting, 3, {"l1", "l2"}, None)
    assert watched == {"l3", "r1", "r2"} and resume == (1, "l2")
    watched, resume = next_in_line(waiting, 3, {"l3"}, resume)
    assert watched == {"r1", "r2", "l1"} and resume == (2, "l3")
    # r1, r2 were started; the line comes round to the unreadable files, one of which is still tried
    # (its turn had come), the others next: each is tried in turn, none keeps a place for ever.
    del waiting["r1"], waiting["r2"]
    watched, resume = next_in_line(waiting, 1, {"l1"}, resume)
    assert watched == {"l2"} and resume == (0, "l1")
    watched, resume = next_in_line(waiting, 1, {"l2"}, resume)
    assert watched == {"l3"} and resume == (1, "l2")
    # A file arriving now (or whose permissions were fixed: a new ctime) goes before them.
    waiting["late"] = (1, 9, 9)
    watched, resume = next_in_line(waiting, 1, {"l3"}, resume)
    assert watched == {"late"} and resume == (2, "l3")
    # The unreadable files were taken away: the line starts at its head again.
    watched, resume = next_in_line({"late": (1, 9, 9)}, 1, set(), resume)
    assert watched == {"late"} and resume is None


def test_a_file_in_line_before_the_unreadable_ones_stops_the_line_moving_on():
    # `new` was not tried this tick (it was not watched yet): the line moves on no further than it.
    waiting = {"a": (1, 1, 1), "new": (1, 2, 2), "b": (1, 3, 3)}
    watched, resume = next_in_line(waiting, 2, {"a", "b"}, None)
    assert resume == (1, "a") and watched == {"new", "b"}


def test_archive_never_overwrites_different_content(tmp_path):
    target_dir = tmp_path / "processed"
    first = tmp_path / "in" / "f.csv"
    first.parent.mkdir()
    first.write_text("one")
    moved = archive(first, target_dir, sha256_of_file(first), keep_source=False)
    assert moved == target_dir / "f.csv" and not first.exists()

    first.write_text("two")
    sha = sha256_of_file(first)
    second = archive(first, target_dir, sha, keep_source=True)
    assert second == target_dir / f"f.{sha[:12]}.csv"
    assert first.exists() and moved.read_text() == "one" and second.read_text() == "two"
    assert sorted(os.listdir(target_dir)) == sorted(["f.csv", f"f.{sha[:12]}.csv"])


def test_a_landed_file_is_copied_under_the_hash_of_the_bytes_copied(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_bytes(b"MRN-1,SK00,Headache\n" * 100_000)  # 2 MB: more than one copy block
    files_dir = tmp_path / "files"
    sha256 = copy_by_content(source, files_dir)
    assert sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert [path.name for path in files_dir.iterdir()] == [sha256]
    assert (files_dir / sha256).read_bytes() == source.read_bytes()
    with pytest.raises(IsADirectoryError):
        copy_by_content(tmp_path, files_dir)  # unreadable: no half copy is left behind
    assert [path.name for path in files_dir.iterdir()] == [sha256]


def test_bytes_other_than_those_expected_are_not_kept(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_bytes(b"MRN-1,SK00,Headache\n")
    expected = hashlib.sha256(b"MRN-1,SK00,Headache\nMRN-2,SK01,Fever\n").hexdigest()
    files_dir = tmp_path / "files"
    with pytest.raises(ContentChanged):
        copy_by_content(source, files_dir, expected_sha256=expected)
    assert list(files_dir.iterdir()) == []
    assert copy_by_content(source, files_dir, expected_sha256=sha256_of_file(source)) == sha256_of_file(
        source
    )
