"""`tm2 ingest` runs whose process is gone: ended, so that their file name can run again.

`tm2 ingest` runs a file in its own process, outside the run queue and run monitoring (which could
not stop it). A process killed (`kill -9`, a crash, a power cut) leaves its run marked as started
for ever, and the file name is refused as "under way" by every later `tm2 ingest` and by the
landing sensor. Each such run is tagged with its process (host, pid, start time); a run of this host
whose process no longer exists is marked canceled (not failed: a failed run would be retried by the
daemon, outside the user's command). What it did not finish is done by the next run of the file, or,
once its records are stored, by the nightly retry (`runs_to_finish`).
"""

from __future__ import annotations

import socket

import dagster as dg
import psutil

from tm2_pipeline.assets.raw import SHA256_TAG
from tm2_pipeline.partitions import PARTITION_TAG, UNFINISHED_STATUSES

INGEST_PROCESS_TAG = "tm2/ingest_process"
ABANDONED_TAG = "tm2/abandoned"  # on a run canceled here
# On an abandoned run once the nightly retry has dealt with it: what it did with the run's records.
FINISHED_TAG = "tm2/finished_by_nightly_retry"
STORE_STEP = "tm2_mongo_records"  # its blocking checks run in the same step
SUBMISSION_ASSET = dg.AssetKey("openmrs_submissions")


def this_process() -> str:
    """The tag value naming this process: host, pid and start time (a pid alone can be reused)."""
    process = psutil.Process()
    return f"{socket.gethostname()}:{process.pid}:{process.create_time():.2f}"


def process_is_gone(tag: str) -> bool:
    """Whether the process a tag names is known to have ended. Only this host's processes can be
    told; anything unreadable counts as alive."""
    try:
        host, pid_text, started_text = tag.rsplit(":", 2)
        pid, started = int(pid_text), float(started_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    try:
        return abs(psutil.Process(pid).create_time() - started) > 0.5  # the pid names another process
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def end_abandoned_ingests(
    instance: dg.DagsterInstance, name: str | None = None
) -> tuple[list[dg.DagsterRun], list[dg.DagsterRun]]:
    """Cancel the unfinished `tm2 ingest` runs of this file name (None: of every name) whose process
    is gone. Returns the runs canceled, and the unfinished runs left (newest first), from one
    run-storage query."""
    ended, unfinished = [], []
    tags = {PARTITION_TAG: name} if name is not None else None
    for run in instance.get_runs(dg.RunsFilter(tags=tags, statuses=UNFINISHED_STATUSES)):
        tag = run.tags.get(INGEST_PROCESS_TAG)
        if not (tag and process_is_gone(tag)):
            unfinished.append(run)
            continue
        # Tagged first: the landing sensor runs a file whose last run ended this way again, where it
        # leaves any other canceled run to a person (see sensors._next_step).
        instance.add_run_tags(run.run_id, {ABANDONED_TAG: "true"})
        instance.report_run_canceled(
            run,
            message="the tm2 ingest process running it ended without finishing it (killed or "
            "crashed); the next run of the file completes what it left",
        )
        ended.append(run)
    return ended, unfinished


def runs_to_finish(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Abandoned runs the nightly retry has not dealt with yet, oldest first."""
    runs = instance.get_runs(
        dg.RunsFilter(tags={ABANDONED_TAG: "true"}, statuses=[dg.DagsterRunStatus.CANCELED])
    )
    return [run for run in reversed(runs) if FINISHED_TAG not in run.tags]


def why_not_send(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """Why the nightly retry leaves this abandoned run's records alone, or None (send them)."""
    if not _sends(run):
        return "OpenMRS was not in the run's selection: nothing to send"
    if (completed := _completed_later(instance, run)) is not None:
        return f"run {completed} of the same file completed it"
    [store_step] = instance.get_run_step_stats(run.run_id, step_keys=[STORE_STEP]) or [None]
    if store_step is None or store_step.status is None or store_step.status.value != "SUCCESS":
        # Stored in part, or not checked: the file's next run stores the rest, checks, and sends.
        return "its store step did not finish: the file's next run sends its records"
    return None


def mark_finished(instance: dg.DagsterInstance, run: dg.DagsterRun, what: str) -> None:
    instance.add_run_tags(run.run_id, {FINISHED_TAG: what})


def _sends(run: dg.DagsterRun) -> bool:
    """Whether the run was to send its records (no selection, stored as empty: the whole job)."""
    return not run.asset_selection or SUBMISSION_ASSET in run.asset_selection


def _completed_later(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """The id of a later run of the same file content that succeeded, OpenMRS included, or None."""
    own = instance.get_run_record_by_id(run.run_id)
    same_file = {PARTITION_TAG: run.tags.get(PARTITION_TAG, ""), SHA256_TAG: run.tags.get(SHA256_TAG, "")}
    for record in instance.get_run_records(
        dg.RunsFilter(tags=same_file, statuses=[dg.DagsterRunStatus.SUCCESS])
    ):
        if own is not None and record.storage_id > own.storage_id and _sends(record.dagster_run):
            return record.dagster_run.run_id
    return None
