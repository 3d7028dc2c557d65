"""What happens to a file that cannot be read as a TM2 export: a data outcome, not an error.

It is kept in `failed/` beside `<kept name>.error.txt` (the name, or the name plus its content hash when
another version of the file is there already), recorded in the ledger, and never retried.
"""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from tm2_pipeline.home import Tm2Home
from tm2_pipeline.landing import archive, bounded_name, write_error_note
from tm2_pipeline.reading import FileRefused
from tm2_pipeline.resources.mongo import MongoResource

REFUSED_METADATA = "tm2/refused"


def describe(refusal: FileRefused) -> str:
    return f"{refusal.reason}: {refusal.message}"


def record_refusal(
    refusal: FileRefused,
    *,
    name: str,
    copy: Path,
    sha256: str,
    home: Tm2Home,
    mongo: MongoResource,
    run_id: str,
) -> Path:
    """Keep the bytes and the reason in failed/, and the outcome in the ledger; returns the note's path."""
    kept = archive(copy, home.failed_dir, sha256, keep_source=True, name=bounded_name(name, sha256))
    # Named after the kept copy: another version's note under the same file name stays as it was.
    note = write_error_note(home.failed_dir, kept.name, f"refused ({describe(refusal)})")
    mongo.ingestions().record_outcome(
        file=name,
        sha256=sha256,
        status="refused",
        error=refusal.message,
        at=datetime.now(UTC),
        run_id=run_id,
        size=copy.stat().st_size,
    )
    return note


def refusal_failure(refusal: FileRefused) -> dg.Failure:
    """For a refusal found after the raw stage (a CSV structure broken far down the file)."""
    return dg.Failure(
        description=describe(refusal), metadata={REFUSED_METADATA: refusal.reason}, allow_retries=False
    )
