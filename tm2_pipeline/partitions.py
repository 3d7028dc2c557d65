"""One dynamic partition per landed file name."""

import time
from collections.abc import Sequence

import dagster as dg

from tm2_pipeline.landing import MAX_NAME_BYTES

# Dynamic partitions are global to a Dagster instance: the name must be unique to this project.
tm2_csv_files = dg.DynamicPartitionsDefinition(name="tm2_csv_files")
PARTITION_TAG = "dagster/partition"  # set by Dagster on every run of a partition
# Set on every run request (sensors.ingest_run_request): the sha256 of the bytes the run is for.
SHA256_TAG = "tm2/sha256"
UNFINISHED_STATUSES = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.SUSPENDED,
    dg.DagsterRunStatus.CANCELING,
]


# Dagster's own retry of a failed run (run_retries) is created by the daemon moments after the
# failure; one not created within this long is not coming (the daemon is down, or it was in-process).
_RETRY_GRACE_S = 600


def latest_run(instance: dg.DagsterInstance, name: str) -> dg.RunRecord | None:
    """The newest run of this file name's partition, or None."""
    records = instance.get_run_records(dg.RunsFilter(tags={PARTITION_TAG: name}), limit=1)
    return records[0] if records else None


def unfinished_run(unfinished: Sequence[dg.DagsterRun], latest: dg.RunRecord | None) -> dg.DagsterRun | None:
    """Of a file name's unfinished runs (newest first) and its newest run `latest`, read after them:
    the run under way, or `latest` when Dagster is about to retry it; else None. Two runs of one
    partition at once would share its tables between steps: an older version of the file could win."""
    if unfinished:
        return unfinished[0]
    if latest is not None and latest.dagster_run.status in UNFINISHED_STATUSES:
        return latest.dagster_run  # started since the unfinished runs were read
    about_to_retry = (
        latest is not None
        and latest.dagster_run.is_complete_and_waiting_to_retry
        and latest.end_time is not None
        and time.time() - latest.end_time < _RETRY_GRACE_S
    )
    return latest.dagster_run if about_to_retry else None


def older_unfinished_run(instance: dg.DagsterInstance, name: str, run_id: str) -> dg.DagsterRun | None:
    """The oldest run of this file name's partition created before run `run_id` that has not ended, or
    None. Checking for a run under way and then starting one leaves a gap (`tm2 ingest` runs outside
    the queue); of two runs that both got through it, the newer sees the older here and stops."""
    own = instance.get_run_record_by_id(run_id)
    if own is None:
        return None
    unfinished = instance.get_run_records(
        dg.RunsFilter(tags={PARTITION_TAG: name}, statuses=UNFINISHED_STATUSES)
    )
    older = [record for record in unfinished if record.storage_id < own.storage_id]
    return min(older, key=lambda record: record.storage_id).dagster_run if older else None


def partition_key_problem(name: str) -> str | None:
    """Why a file name cannot be a partition key, or None: the UI breaks on commas and `...`, Dagster
    stores keys as UTF-8 text, and the files named after it need room (landing.MAX_NAME_BYTES)."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return (
            f"the file name {name!r} is not valid UTF-8 text: rename it (each file is a partition of the "
            "Dagster assets, whose names are stored as text)"
        )
    if size > MAX_NAME_BYTES:
        return (
            f"the file name {name!r} is {size} bytes long in UTF-8: rename it to at most {MAX_NAME_BYTES} "
            "(the files the pipeline names after it must fit the 255-byte limit of file names)"
        )
    if "," in name or "..." in name or any(ord(ch) < 32 for ch in name):
        return (
            f"the file name {name!r} cannot be used: rename it without commas, '...' or control characters "
            "(each file is a partition of the Dagster assets, and the UI cannot address such names)"
        )
    return None
