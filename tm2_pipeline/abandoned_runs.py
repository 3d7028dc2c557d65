"""`tm2 ingest` runs whose process is gone: ended, so that their file name can run again.

`tm2 ingest` runs a file in its own process, outside the run queue and run monitoring (which could
not stop it). A process killed (`kill -9`, a crash, a power cut) leaves its run marked as started
for ever, and the file name is refused as "under way" by every later `tm2 ingest` and by the
landing sensor. Each such run is tagged with its process (host, pid, start time); a run of this host
whose process no longer exists is marked canceled (not failed: a failed run would be retried by the
daemon, outside the user's command). What it did not finish is done by the next run of the file.
"""

from __future__ import annotations

import socket

import dagster as dg
import psutil

from tm2_pipeline.partitions import PARTITION_TAG, UNFINISHED_STATUSES

INGEST_PROCESS_TAG = "tm2/ingest_process"
ABANDONED_TAG = "tm2/abandoned"  # on a run canceled here


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
    instance: dg.DagsterInstance, name: str
) -> tuple[list[dg.DagsterRun], list[dg.DagsterRun]]:
    """Cancel the unfinished `tm2 ingest` runs of this file name whose process is gone. Returns the
    runs canceled, and the name's unfinished runs left (newest first), from one run-storage query."""
    ended, unfinished = [], []
    for run in instance.get_runs(dg.RunsFilter(tags={PARTITION_TAG: name}, statuses=UNFINISHED_STATUSES)):
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
