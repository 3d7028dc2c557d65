"""`tm2 submissions`: the records not (yet) in OpenMRS, each with where it came from and why it waits.

Pure: the log's entries and a lookup of stored records come in, plain rows go out. The patient id is
in a row only on request (`with_values`), and so is the record key: an unsalted hash of the patient
id, the code, the date and the system, with the code and date beside it, gives the id back to anyone
who tries the clinic's id range. Attempt messages never hold one (see `states.Attempt`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from tm2_pipeline.openmrs.states import CONFIRMED_STATES, SubmissionEntry, SubmissionState

# What is listed unless states are named: everything OpenMRS is not known to hold.
NOT_IN_OPENMRS = tuple(state for state in SubmissionState if state not in CONFIRMED_STATES)
_LOOKUP_CHUNK = 1000


def listed_submissions(
    entries: Iterable[SubmissionEntry],
    find_records: Callable[[Sequence[str]], Iterable[dict[str, Any]]],
    *,
    with_values: bool = False,
) -> Iterator[dict[str, Any]]:
    """One row per entry, in the entries' order; `find_records(keys)` gives stored record documents."""
    remaining = iter(entries)
    while chunk := list(itertools.islice(remaining, _LOOKUP_CHUNK)):
        records = {record["_id"]: record for record in find_records([entry.key for entry in chunk])}
        for entry in chunk:
            yield _row(entry, records.get(entry.key), with_values)


def _row(entry: SubmissionEntry, record: dict[str, Any] | None, with_values: bool) -> dict[str, Any]:
    source = (record or {}).get("source") or {}
    last = entry.attempts[-1] if entry.attempts else None
    row: dict[str, Any] = {
        "state": entry.state.value,
        "file": source.get("file"),
        "row": source.get("row"),
        "tm2_code": (record or {}).get("tm2_code"),
        "diagnosis_date": (record or {}).get("diagnosis_date"),
        "updated_at": entry.updated_at.isoformat() if entry.updated_at else None,
        "last_attempt": None
        if last is None
        else {"method": last.method, "status": last.status, "message": last.message},
    }
    if with_values:
        row["patient_id"] = (record or {}).get("patient_id")
        row["key"] = entry.key
    return row


def describe(row: dict[str, Any]) -> str:
    """One line of text for a listed row."""
    parts = [
        f"{row['file']} row {row['row']}" if row["file"] else "a record no longer in the store",
        row["state"],
    ]
    if row["tm2_code"]:
        parts.append(f"{row['tm2_code']} {row['diagnosis_date']}")
    if "patient_id" in row:
        parts.append(f"patient {row['patient_id']}")
    if (last := row["last_attempt"]) is not None:
        status = f" {last['status']}" if last["status"] is not None else ""
        parts.append(f"last: {last['method']}{status} {last['message']}".rstrip())
    return "  ".join(parts)
