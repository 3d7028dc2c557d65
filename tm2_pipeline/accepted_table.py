"""The accepted records of one file as a Parquet table: written a chunk at a time, read a batch at a time.

Validation hands each chunk's accepted records to an `AcceptedTableWriter`, and the store reads the
table back through `AcceptedTable.frames`, so neither holds the whole file's records: memory stays
flat as files grow. The file's validation summary rides in the footer's key-value metadata (written
once the last chunk is in), under the key pandas uses for `DataFrame.attrs`.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tm2_pipeline.records import ACCEPTED_RECORD_COLUMNS

# Where pandas keeps `DataFrame.attrs` in a Parquet file's metadata.
PANDAS_ATTRS_KEY = b"PANDAS_ATTRS"

ACCEPTED_TABLE_SCHEMA = pa.schema(
    [(column, pa.string()) for column in ACCEPTED_RECORD_COLUMNS if column != "source_row"]
    + [("source_row", pa.int64())]
)


# A table being written is staged next to its final path, named after the run writing it.
STAGING_SUFFIX = ".partial"


def staging_path(table_path: Path, run_id: str) -> Path:
    """Where run `run_id` writes the table before the IO manager moves it to `table_path`."""
    return table_path.with_name(f"{table_path.name}.{run_id}{STAGING_SUFFIX}")


def staged_tables(table_path: Path) -> dict[str, Path]:
    """run id -> staging file beside `table_path`, whichever run left it (a killed or failed one too)."""
    prefix = f"{table_path.name}."
    found = {}
    for path in table_path.parent.glob(f"{glob.escape(prefix)}*{STAGING_SUFFIX}"):
        run_id = path.name[len(prefix) : -len(STAGING_SUFFIX)]
        if "." not in run_id:  # else another partition's file whose name extends this one's
            found[run_id] = path
    return found


class AcceptedTableWriter:
    """Appends accepted-record chunks to one Parquet file; `close(attrs)` seals it with its summary.

    Leaving the `with` block on an error removes the partial file: a table is whole or absent.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(path, ACCEPTED_TABLE_SCHEMA)
        self.rows = 0

    def write(self, records: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(records, schema=ACCEPTED_TABLE_SCHEMA, preserve_index=False)
        self._writer.write_table(table)
        self.rows += len(records)

    def close(self, attrs: dict[str, Any]) -> AcceptedTable:
        self._writer.add_key_value_metadata({PANDAS_ATTRS_KEY: json.dumps(attrs, ensure_ascii=False)})
        self._writer.close()
        return AcceptedTable(self.path)

    def __enter__(self) -> AcceptedTableWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is not None:
            self._writer.close()
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class AcceptedTable:
    """A validated table on disk, read lazily: its footer, one column, or batches of rows."""

    path: Path

    def _open(self) -> pq.ParquetFile:
        return pq.ParquetFile(self.path)

    @cached_property
    def attrs(self) -> dict[str, Any]:
        """The summary written at close (read from the footer only)."""
        with self._open() as parquet:
            metadata = parquet.metadata.metadata or {}  # the footer's key-value pairs
        return json.loads(metadata.get(PANDAS_ATTRS_KEY, b"{}"))

    @cached_property
    def num_rows(self) -> int:
        with self._open() as parquet:
            return parquet.metadata.num_rows

    def column(self, name: str) -> pa.ChunkedArray:
        """One column as Arrow (compact: no Python object per value)."""
        return pq.read_table(self.path, columns=[name]).column(name)

    def distinct_count(self, name: str) -> int:
        return pc.count_distinct(self.column(name)).as_py()

    def frames(self, rows: int) -> Iterator[pd.DataFrame]:
        """The records, `rows` at a time, as pandas frames of ACCEPTED_RECORD_COLUMNS."""
        with self._open() as parquet:
            for batch in parquet.iter_batches(batch_size=rows):
                yield batch.to_pandas()

    def to_pandas(self) -> pd.DataFrame:
        """The whole table (small files, tests), attrs included."""
        frame = pd.read_parquet(self.path)
        frame.attrs = self.attrs
        return frame

    def move_to(self, target: Path) -> AcceptedTable:
        """Put the finished table at `target` atomically (readers never see half a table)."""
        if target != self.path:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path, target)
        return AcceptedTable(target)
