"""The layout of `$TM2_HOME`: the one place where patient data lives on disk (never inside the repo)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path


@dataclass(frozen=True)
class Tm2Home:
    root: Path

    @property
    def files_dir(self) -> Path:
        """Content-addressed copies of every ingested file: `files/<sha256>`."""
        return self.root / "files"

    def file_copy(self, sha256: str) -> Path:
        return self.files_dir / sha256

    @property
    def tables_dir(self) -> Path:
        """Parquet tables passed between assets: `tables/<asset>/<partition>.parquet`."""
        return self.root / "tables"

    def table_path(self, asset_name: str, partition: str, suffix: str = ".parquet") -> Path:
        return self.tables_dir / asset_name / f"{partition}{suffix}"

    def processed_dir(self, day: date) -> Path:
        return self.root / "processed" / day.isoformat()

    @property
    def failed_dir(self) -> Path:
        return self.root / "failed"

    @property
    def mongo_dir(self) -> Path:
        return self.root / "mongo"

    @property
    def sandbox_dir(self) -> Path:
        """Persisted state of the local OpenMRS sandbox."""
        return self.root / "openmrs-sandbox"
