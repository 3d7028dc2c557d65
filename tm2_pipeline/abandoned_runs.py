"""Runs whose process is gone: ended, so that their file name can run again.

A run's process can die without a word: `kill -9`, a crash, a power cut, a reboot. `tm2 ingest` runs
a file in its own process, outside the run queue and run monitoring (which could not stop it). A
daemon run's dead run worker is noticed by the code server that started it; when that died too (a
reboot), only by the run monitor, which with the local run launcher fails the run after its maximum
runtime (a day). Meanwhile the run stays "started", and its file name is refused as
"under way" by every later `tm2 ingest` and by the landing sensor. So each run is tagged with the
process running it (host, pid, start time): `tm2 ingest`'s own, or a daemon run's run worker. A run
of this host whose process no longer exists is marked canceled, and tagged so (not failed: a failed
run would be retried by the daemon too, beside the sensor's or the user's own new run). What it did
not finish is done by the next run of the file, or, once its store step had finished, by the nightly
retry (`runs_to_finish`).
"""

from __future__ import annotations

import multiprocessing
import os

import dagster as dg

from tm2_pipeline.partitions import PARTITION_TAG, UNFINISHED_STATUSES
from tm2_pipeline.process_identity import identity_of, is_gone

# Our tags on a run, each written for that very run: Dagster copies a run's tags to its retries and
# re-executions, where a copy must not count. Values: "<run id> <what>" (`own_tag` reads them).
RUN_PROCESS_TAG = "tm2/run_process"  # <run id> <process_identity> of the process running it
ABANDONED_TAG = "tm2/abandoned"  # <run id> ...: canceled here, its process gone
# On an abandoned run once the nightly retry has dealt with it: what it did with the run's records.
FINISHED_TAG = "tm2/finished_by_nightly_retry"
STORE_STEP = "tm2_mongo_records"  # its blocking checks run in the same step
SUBMISSION_ASSET = dg.AssetKey("openmrs_submissions")
MAX_RUNTIME_TAG = "dagster/max_runtime"  # read by Dagster's run monitor
MAX_RETRIES_TAG = "dagster/max_retries"  # read by Dagster's run retries (run_retries)
# A run in process is the terminal's: its failure is reported there and run again from there. Left
# to run_retries, a run failing before its steps (MongoDB unreachable) waited for a retry that only
# a daemon would start, and held its file name meanwhile. The run monitor cannot stop it either: its
# time limit would only mark it failed while it goes on, freeing its file name for a second run.
IN_PROCESS_RUN_TAGS = {MAX_RUNTIME_TAG: "0", MAX_RETRIES_TAG: "0"}


def tag_for(run_id: str, value: str) -> str:
    return f"{run_id} {value}"


def own_tag(run: dg.DagsterRun, key: str) -> str | None:
    """The value of our tag `key` when it was written for this run; None when absent or copied."""
    owner, _, value = run.tags.get(key, "").partition(" ")
    return value if owner == run.run_id else None


def is_abandoned(run: dg.DagsterRun) -> bool:
    """Canceled here because its process was gone (not by a person)."""
    return run.status == dg.DagsterRunStatus.CANCELED and own_tag(run, ABANDONED_TAG) is not None


def this_process(run_id: str) -> str | None:
    """The RUN_PROCESS_TAG value naming this process (`process_identity`); None when it cannot be
    named (a /proc of another pid namespace): a run without it is never taken for abandoned."""
    identity = identity_of(os.getpid())
    return tag_for(run_id, identity) if identity is not None else None


def in_process_run_tags(run_id: str) -> dict[str, str]:
    """The tags of run `run_id`, executed in this process (`tm2 ingest`, `tm2 retry`): no time limit,
    no run retries, and this process named, so that a killed one is ended by the next look."""
    process = this_process(run_id)
    return {**IN_PROCESS_RUN_TAGS, **({RUN_PROCESS_TAG: process} if process is not None else {})}


def tag_run_worker(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """Called by every asset step: on a daemon run, name its run worker (a retry or re-execution
    from failure starts at a later step), and hand back the run monitor's time limit and the run
    retries that a re-executed `tm2 ingest` run copied (IN_PROCESS_RUN_TAGS: right only in process,
    where a limit would free the name while the run goes on). No-op on a run already named, or run
    in process."""
    if own_tag(run, RUN_PROCESS_TAG) is not None:
        return
    parent = multiprocessing.parent_process()  # Dagster's multiprocess executor spawns each step
    if parent is None or parent.pid is None:
        return  # run in process (`tm2 ingest` names itself)
    # With the in-process executor the step runs in the run worker, whose parent is the code server.
    in_worker = "in_process" in (run.run_config.get("execution") or {}).get("config", {})
    worker = identity_of(os.getpid() if in_worker else parent.pid)
    if worker is None:
        return
    tags = {RUN_PROCESS_TAG: tag_for(run.run_id, worker)}
    if run.tags.get(MAX_RUNTIME_TAG) == "0":
        tags[MAX_RUNTIME_TAG] = ""  # empty: the instance's run_monitoring.max_runtime_seconds
    if run.tags.get(MAX_RETRIES_TAG) == "0":
        tags[MAX_RETRIES_TAG] = str(instance.run_retries_max_retries)  # the instance's run_retries
    instance.add_run_tags(run.run_id, tags)


def end_abandoned_runs(
    instance: dg.DagsterInstance, name: str | None = None
) -> tuple[list[dg.DagsterRun], list[dg.DagsterRun]]:
    """Cancel the unfinished runs of this file name (None: of every name) whose process is gone.
    Returns the runs canceled, and the unfinished runs left (newest first), from one run-storage
    query."""
    ended, unfinished = [], []
    tags = {PARTITION_TAG: name} if name is not None else None
    for run in instance.get_runs(dg.RunsFilter(tags=tags, statuses=UNFINISHED_STATUSES)):
        where = own_tag(run, RUN_PROCESS_TAG)
        if not (where and is_gone(where)):
            unfinished.append(run)
            continue
        if run.status == dg.DagsterRunStatus.CANCELING:
            # A person asked for it to stop (the UI's Terminate), and nothing was left to stop it.
            instance.report_run_canceled(run, message="canceled; the process running it had ended")
            continue
        # Tagged first: the landing sensor runs a file whose last run ended this way again, where it
        # leaves any other canceled run to a person (see sensors._next_step).
        instance.add_run_tags(run.run_id, {ABANDONED_TAG: tag_for(run.run_id, "its process ended")})
        instance.report_run_canceled(
            run,
            message="the process running it ended without finishing it (killed, crashed, or the "
            "machine stopped); the next run of the file, or once its store step had finished the "
            "nightly retry, sends what it left",
        )
        ended.append(run)
    return ended, unfinished


def runs_to_finish(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Abandoned runs the nightly retry has not dealt with yet, oldest first."""
    # Any job's: the asset graph's own job materializes these assets too. Canceled runs are few.
    canceled = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.CANCELED]))
    return [
        run
        for run in reversed(canceled)
        # A file's runs only: a dead `tm2 retry` left nothing of a file behind.
        if PARTITION_TAG in run.tags and is_abandoned(run) and own_tag(run, FINISHED_TAG) is None
    ]


def why_not_send(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """Why the nightly retry leaves this abandoned run's records alone, or None (send them)."""
    if not _sends(run):
        return "OpenMRS was not in the run's selection: nothing to send"
    if (later := _later_run(instance, run)) is not None:
        # The later landed wins: a correction may have dropped rows this version stored.
        return f"run {later} of the same file name came after it and sent what its file holds"
    if not _store_step_succeeded(instance, run):
        # Stored in part, or not checked: the file's next run stores the rest, checks, and sends.
        return "its store step did not finish: the file's next run sends its records"
    return None


def mark_finished(instance: dg.DagsterInstance, run: dg.DagsterRun, what: str) -> None:
    instance.add_run_tags(run.run_id, {FINISHED_TAG: tag_for(run.run_id, what)})


def _sends(run: dg.DagsterRun) -> bool:
    """Whether the run was to send its records (no selection, stored as empty: the whole job)."""
    return not run.asset_selection or SUBMISSION_ASSET in run.asset_selection


def later_run_under_way(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """The id of an unfinished later run of the same file name that is to send, or None. Until it
    ends, whether it supersedes this run cannot be told (it may stop before its store)."""
    later = [other for other in _later_runs(instance, run) if not other.is_finished and _sends(other)]
    return later[0].run_id if later else None


def _later_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """The id of a later run of the same file name that sent its file's records (it got past its
    store step), or None."""
    for later in _later_runs(instance, run):
        if later.is_finished and _sends(later) and _store_step_succeeded(instance, later):
            return later.run_id
    return None


def _later_runs(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[dg.DagsterRun]:
    """The runs of the same file name created after this one, newest first."""
    own = instance.get_run_record_by_id(run.run_id)
    if own is None:
        return []
    name = {PARTITION_TAG: run.tags.get(PARTITION_TAG, "")}
    later = []
    for record in instance.get_run_records(dg.RunsFilter(tags=name)):  # newest first
        if record.storage_id <= own.storage_id:
            break
        later.append(record.dagster_run)
    return later


def _store_step_succeeded(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    [store_step] = instance.get_run_step_stats(run.run_id, step_keys=[STORE_STEP]) or [None]
    return store_step is not None and store_step.status is not None and store_step.status.value == "SUCCESS"
