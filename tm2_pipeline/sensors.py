"""The landing-directory sensor: one dynamic partition per file name, one run per file content.

Each tick: scan the landing dir (os.scandir), keep per-file (size, mtime, ctime) and sha256 in the
cursor, and for each file that has been stable for a tick either request its run, wait, or move the
file out (processed/<date>/ on success; failed/ with `<archived name>.error.txt` when refused,
blocked, or failed three times since it arrived). Nothing is requested for a partition while any of
its runs is unfinished, and a file is judged by its partition's latest run: a file whose content was
not the last ingested under its name, or that was put back in landing after its run, is run again.
Run keys are `<name>:<sha256[:12]>@<storage id of the partition's newest run when requested>`: one
per intended run, stable if a tick is replayed.
A file is archived only if it has not changed since the tick's scan. Files are served in order of
arrival (landing_watch.arrival), so however many others keep landing, each file's turn comes; a file
the sensor cannot read is warned about and goes to the back of the line (landing_watch.next_in_line).
However many files land at once, the cursor and the run queue stay bounded (IN_PROGRESS_TICKS,
WATCHED_TICKS).
"""

import time
from pathlib import Path

import dagster as dg

from tm2_pipeline.abandoned_runs import end_abandoned_runs, is_abandoned
from tm2_pipeline.jobs import ingest_tm2_file
from tm2_pipeline.landing import archive, bounded_name, sha256_of_file, write_error_note
from tm2_pipeline.landing_watch import (
    LandedFile,
    is_unchanged,
    next_in_line,
    read_cursor,
    remembered,
    scan_landing_dir,
    stable_files,
    write_cursor,
)
from tm2_pipeline.partitions import (
    SHA256_TAG,
    latest_run,
    partition_key_problem,
    tm2_csv_files,
    unfinished_run,
)
from tm2_pipeline.pipeline_config import PipelineConfig
from tm2_pipeline.run_outcome import FAILED, REFUSED, SUCCEEDED, classify_run

MAX_ATTEMPTS = 3
# The cursor is written into every tick record, so it is kept small however many files land at once
# (a backfill of years of exports): files the sensor has started on ("in progress": hashed, a run
# requested or waiting for one of its name) are capped at this many runs per tick's worth, and of
# the files not started on only the first few ticks' worth (in order of arrival) are watched for
# stability.
IN_PROGRESS_TICKS = 10
WATCHED_TICKS = 5
# Seconds of work (hashing files, reading run history) one tick may start on: Dagster gives up on a
# tick after 60 s by default, and a tick given up on keeps nothing (neither its cursor nor its runs),
# so with many large files the same work would be done again every tick. The rest waits for the next.
TICK_BUDGET_S = 30.0
FILE_VERSION_TAG = "tm2/file_version"
ATTEMPT_TAG = "tm2/attempt"
# The landed file a sensor run was started on, as (size, mtime_ns, ctime_ns): a file in landing with
# another triple was put back after that run (ctime changes with any write, move or copy).
LANDED_AS_TAG = "tm2/landed_as"


def ingest_run_request(
    name: str,
    source: Path,
    sha256: str,
    attempt: int = 1,
    after_run: int = 0,
    landed_as: tuple[int, ...] | None = None,
) -> dg.RunRequest:
    """The run of one file version. `after_run`, the storage id of the partition's newest run when it
    was requested (0: none), makes the run key: one key per intended run, the same key when a tick is
    evaluated again (Dagster skips a run key it has seen). `landed_as`: the sensor's (size, mtime_ns,
    ctime_ns) of the landed file."""
    version = f"{name}:{sha256[:12]}"
    tags = {FILE_VERSION_TAG: version, ATTEMPT_TAG: str(attempt), SHA256_TAG: sha256}
    if landed_as is not None:
        tags[LANDED_AS_TAG] = _landed_as(landed_as)
    return dg.RunRequest(
        partition_key=name,
        run_key=f"{version}@{after_run}",
        run_config={"ops": {"raw_tm2_file": {"config": {"source_path": str(source)}}}},
        tags=tags,
    )


def _landed_as(seen: tuple[int, ...]) -> str:
    return ":".join(str(part) for part in seen)


def build_landing_sensor(interval_s: int, max_runs_per_tick: int) -> dg.SensorDefinition:
    @dg.sensor(
        name="tm2_landing_sensor",
        job=ingest_tm2_file,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Starts one ingestion run per new or corrected file in TM2_LANDING_DIR.",
    )
    def tm2_landing_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineConfig) -> dg.SensorResult:
        landing_dir = Path(pipeline.landing_dir)
        if not landing_dir.is_dir():
            # Said in the tick history: a mistyped TM2_LANDING_DIR would otherwise look like "no files".
            return dg.SensorResult(
                skip_reason=f"{landing_dir} (TM2_LANDING_DIR) is not a directory: create it",
                cursor=context.cursor,
            )
        previous, resume_after = read_cursor(context.cursor)
        current = scan_landing_dir(landing_dir)
        files = remembered(current, previous)
        known_partitions = set(context.instance.get_dynamic_partitions(tm2_csv_files.name))

        run_requests: list[dg.RunRequest] = []
        new_partitions: list[str] = []
        in_progress = sum(landed.started for landed in files.values())
        held_back = 0
        unreadable: set[str] = set()  # could not be hashed: not started on
        started, looked_at = time.monotonic(), 0
        for name in stable_files(current, {name: landed.seen for name, landed in previous.items()}):
            if len(run_requests) >= max_runs_per_tick:
                break
            if looked_at and time.monotonic() - started > TICK_BUDGET_S:
                context.log.info("this tick's time is up: the other files are looked at next tick")
                break
            looked_at += 1
            landed = files[name]
            starting = not landed.started
            if starting and in_progress >= IN_PROGRESS_TICKS * max_runs_per_tick:
                held_back += 1  # back-pressure: finish (archive) some files before starting on more
                continue
            try:
                request = _next_step(context, pipeline, landing_dir / name, landed)
            except Exception as error:  # one file's surprise must not hold back the others
                context.log.warning(f"{name!r} skipped this tick: {_error_kind(error)}")
                request = None
                if not landed.started:
                    unreadable.add(name)  # e.g. left unreadable to us by its uploader
            if starting and landed.started:
                in_progress += 1
            if request is None:
                continue
            run_requests.append(request)
            if name not in known_partitions:
                new_partitions.append(name)
                known_partitions.add(name)

        if held_back:
            context.log.info(
                f"{in_progress} files in progress (at most {IN_PROGRESS_TICKS * max_runs_per_tick}): "
                f"{held_back} more wait until some of them are archived"
            )
        # Remember only files still in the landing dir, and of those not started on only the first few
        # ticks' worth in order of arrival: the others are seen afresh once these are through (stable a
        # tick later). Later arrivals queue behind them, whatever their names; files that could not be
        # read go to the back of the line.
        remaining = {name: landed for name, landed in files.items() if (landing_dir / name).exists()}
        waiting = {name: landed.seen for name, landed in remaining.items() if not landed.started}
        watched, resume_after = next_in_line(
            waiting, WATCHED_TICKS * max_runs_per_tick, unreadable, resume_after
        )
        for name in waiting:
            if name not in watched:
                del remaining[name]
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=[tm2_csv_files.build_add_request(new_partitions)]
            if new_partitions
            else [],
            cursor=write_cursor(remaining, resume_after),
        )

    return tm2_landing_sensor


def _error_kind(error: Exception) -> str:
    """The error's kind, not its message: a message can quote the file's contents."""
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__} [Errno {error.errno}] {error.strerror}"
    return type(error).__name__


def _next_step(
    context: dg.SensorEvaluationContext, pipeline: PipelineConfig, source: Path, landed: LandedFile
) -> dg.RunRequest | None:
    """A run request for this file, or None (a run of its partition is under way, or it was moved out)."""
    if landed.sha256 is None:
        landed.sha256 = sha256_of_file(source)  # once per content: kept in the cursor while unchanged
    sha256, name = landed.sha256, source.name
    if problem := partition_key_problem(name):
        # Refused before any run, as `tm2 ingest` refuses it: no partition is ever made of it.
        _move_to_failed(pipeline, source, landed, note=f"refused: {problem}")
        return None
    instance = context.instance
    ended, unfinished = end_abandoned_runs(instance, name)  # their process died: they never will end
    for run in ended:
        context.log.warning(f"{name}: run {run.run_id}, whose process is gone, marked canceled")
    latest = latest_run(instance, name)
    # Two runs of one partition would share its tables between steps: the later file waits its turn.
    if unfinished_run(unfinished, latest) is not None:
        return None
    after_run = latest.storage_id if latest else 0
    if landed.arrived_after_run is None:
        landed.arrived_after_run = after_run
    version = f"{name}:{sha256[:12]}"
    if latest is None or latest.dagster_run.tags.get(FILE_VERSION_TAG) != version:
        if latest is not None:  # A, B, then A again: the later ingestion wins
            context.log.info(f"{version}: not the content last ingested under this name; ingesting it")
        return ingest_run_request(name, source, sha256, 1, after_run, landed.seen)
    run = latest.dagster_run
    # Canceled because its process died (end_abandoned_runs), not by a person: a failed attempt.
    abandoned = is_abandoned(run)
    outcome = classify_run(instance, run.run_id, run.status == dg.DagsterRunStatus.SUCCESS)
    # A file put back in landing after its last run is a person asking for a new run: the outage is
    # over, TM2_REJECT_BLOCK was raised, or the store is a new database (the run history is not the
    # store's content). After a success that is told by the file itself (LANDED_AS_TAG), not by the
    # sensor's cursor, which a replayed tick does not have: the file left in landing by its own run
    # is archived, not run twice (a second store could undo a correction stored in between). Runs
    # without the tag (`tm2 ingest`) count as this file's.
    if outcome.status == SUCCEEDED:
        landed_as = _landed_as(landed.seen)
        if run.tags.get(LANDED_AS_TAG, landed_as) == landed_as:
            _move(source, landed, pipeline.home.processed_dir(pipeline.today()))
            return None
        context.log.info(f"{version}: put back in landing after its last run (succeeded); running it")
        return ingest_run_request(name, source, sha256, 1, after_run, landed.seen)
    # Otherwise attempts count from the file's arrival, as the cursor remembers it.
    attempt = int(run.tags.get(ATTEMPT_TAG, "1")) if after_run > landed.arrived_after_run else 0
    if attempt == 0:
        context.log.info(f"{version}: put back in landing after its last run ({outcome.status}); running it")
        return ingest_run_request(name, source, sha256, 1, after_run, landed.seen)
    if run.status == dg.DagsterRunStatus.CANCELED and not abandoned:
        note = f"canceled (run {run.run_id}): put the file back in landing to run it again"
    elif (outcome.status == FAILED or abandoned) and attempt < MAX_ATTEMPTS:
        ended_how = "ended with its process" if abandoned else "failed"
        context.log.info(f"{version}: attempt {attempt} {ended_how}; trying again")
        return ingest_run_request(name, source, sha256, attempt + 1, after_run, landed.seen)
    elif abandoned:
        note = (
            f"the process running it ended without finishing it, {attempt} attempts in a row (killed, "
            f"crashed, or the machine stopped; run {run.run_id}): put the file back in landing to run "
            "it again"
        )
    elif outcome.status == REFUSED:
        # The raw step kept its own copy and note; this one follows the landed file's archived name.
        note = f"refused ({outcome.error})" if outcome.error else None
    else:
        detail = f"after {attempt} attempts: " if outcome.status == FAILED else ""
        note = f"{outcome.status} {detail}{outcome.error}"
    _move_to_failed(pipeline, source, landed, note=note)
    return None


def _move(source: Path, landed: LandedFile, directory: Path, *, name: str | None = None) -> Path | None:
    """Archive the file, unless it changed since this tick's scan: bytes written over it meanwhile (a
    corrected export) must not be archived as the version that was ingested. None when not moved."""
    assert landed.sha256 is not None
    if not is_unchanged(source, landed.seen):
        return None  # the next ticks see the new content and run it
    return archive(source, directory, landed.sha256, keep_source=False, name=name)


def _move_to_failed(pipeline: PipelineConfig, source: Path, landed: LandedFile, *, note: str | None) -> None:
    """The file goes to failed/ under a name that leaves room for its note, `<that name>.error.txt`."""
    assert landed.sha256 is not None
    failed_dir = pipeline.home.failed_dir
    kept = _move(source, landed, failed_dir, name=bounded_name(source.name, landed.sha256))
    if kept is not None and note is not None:
        write_error_note(failed_dir, kept.name, note)
