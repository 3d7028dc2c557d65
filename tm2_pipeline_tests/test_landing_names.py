"""Which landed file names can be partitions, and the bounded names refused ones are kept under."""

import os
import uuid
from pathlib import Path

from tm2_pipeline.accepted_table import staging_path
from tm2_pipeline.home import Tm2Home
from tm2_pipeline.landing import MAX_NAME_BYTES, bounded_name
from tm2_pipeline.partitions import partition_key_problem

SHA = "0123456789ab" + "c" * 52
NAME_MAX = 255  # bytes in one file name (ext4, XFS, NTFS, APFS)


def test_the_longest_accepted_name_leaves_room_for_every_name_derived_from_it():
    name = "é" * ((MAX_NAME_BYTES - 4) // 2) + ".csv"
    assert len(name.encode("utf-8")) == MAX_NAME_BYTES and partition_key_problem(name) is None
    table = Tm2Home(Path("/tm2")).table_path("validated_tm2_records", name)
    assert len(staging_path(table, str(uuid.uuid4())).name.encode("utf-8")) <= NAME_MAX
    archived_with_hash = f"{name.partition('.')[0]}.{SHA[:12]}.csv"
    assert len(f"{archived_with_hash}.error.txt".encode()) <= NAME_MAX


def test_a_name_too_long_is_refused_with_its_length_and_what_to_do():
    problem = partition_key_problem("a" * (MAX_NAME_BYTES - 3) + ".csv")
    assert problem is not None
    assert f"{MAX_NAME_BYTES + 1} bytes long" in problem and "rename it" in problem


def test_a_name_that_is_not_utf8_is_refused():
    problem = partition_key_problem(os.fsdecode(b"cl\xednica.csv"))
    assert problem is not None and "not valid UTF-8" in problem and "rename it" in problem


def test_a_refused_name_is_kept_under_a_bounded_utf8_name():
    assert bounded_name("clinic,march.csv", SHA) == "clinic,march.csv"
    long_name = "x" * 250
    kept = bounded_name(long_name, SHA)
    assert kept == "x" * (MAX_NAME_BYTES - 13) + "." + SHA[:12]
    kept = bounded_name(os.fsdecode(b"cl\xednica.csv"), SHA)
    assert kept == f"cl\ufffdnica.csv.{SHA[:12]}"
    kept = bounded_name("é" * 150, SHA)  # cut between characters, never inside one
    assert len(kept.encode("utf-8")) <= MAX_NAME_BYTES and kept.endswith(SHA[:12])
