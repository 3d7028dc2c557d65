"""The validated table on disk: written a chunk at a time, read back a batch at a time, whole or absent."""

from __future__ import annotations

import pandas as pd
import pytest

from tm2_pipeline.accepted_table import AcceptedTable, AcceptedTableWriter, staged_tables, staging_path
from tm2_pipeline_tests.accepted_frames import accepted_frame, with_severity


def test_chunks_written_come_back_in_batches_of_any_size_with_the_footer(tmp_path) -> None:
    records = with_severity(accepted_frame(11), 4, None)  # a missing value survives as None
    records.loc[2, "namaste_code"] = None
    with AcceptedTableWriter(tmp_path / "t.parquet") as writer:
        writer.write(records.iloc[:5])
        writer.write(records.iloc[5:].reset_index(drop=True))
        table = writer.close({"file": "a.csv", "validation": {"rows": 12}})
    assert table.num_rows == 11 == writer.rows
    assert table.attrs == {"file": "a.csv", "validation": {"rows": 12}}
    batches = list(table.frames(4))
    assert [len(batch) for batch in batches] == [4, 4, 3]
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), records)
    whole = table.to_pandas()
    pd.testing.assert_frame_equal(whole, records)
    assert whole.attrs["file"] == "a.csv"
    assert table.distinct_count("record_key") == 11
    assert table.column("tm2_code").to_pylist() == records["tm2_code"].tolist()


def test_a_failure_while_writing_leaves_no_table(tmp_path) -> None:
    path = tmp_path / "t.parquet"
    with pytest.raises(RuntimeError, match="validation broke"), AcceptedTableWriter(path) as writer:
        writer.write(accepted_frame(3))
        raise RuntimeError("validation broke")
    assert not path.exists()


def test_a_table_without_a_summary_has_empty_attrs_and_moves_into_place(tmp_path) -> None:
    staged = tmp_path / "staging" / "t.parquet.partial"
    with AcceptedTableWriter(staged) as writer:
        writer.write(accepted_frame(2))
        table = writer.close({})
    moved = table.move_to(tmp_path / "tables" / "t.parquet")
    assert not staged.exists() and moved.path.exists()
    assert moved.attrs == {} and moved.num_rows == 2
    assert moved.move_to(moved.path) == moved  # already in place: nothing happens
    assert AcceptedTable(moved.path).num_rows == 2


def test_staged_tables_are_found_by_run_and_not_confused_with_a_longer_partition_name(tmp_path) -> None:
    table = tmp_path / "a.csv.parquet"
    mine = staging_path(table, "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed")
    mine.write_bytes(b"x")
    # The partition "a.csv.parquet.b.csv" stages next to it; its file must not count as a.csv's.
    staging_path(tmp_path / "a.csv.parquet.b.csv.parquet", "run-2").write_bytes(b"x")
    (tmp_path / "a.csv.parquet").write_bytes(b"the table itself")
    assert staged_tables(table) == {"1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed": mine}
    assert staged_tables(tmp_path / "[weird].csv.parquet") == {}
