"""The landing-directory sensor: one dynamic partition per file name, one run per file content.

Each tick: scan the landing dir (os.scandir), keep per-file (size, mtime, ctime) and sha256 in the
cursor, and for each file that has been stable for a tick either request its run, wait, or move the
file out (processed/<date>/ on success; failed/ with `<archived name>.error.txt` when refused,
blocked, or failed three times since it arrived). Nothing is requested for a partition while any of
its runs is unfinished, and a file is judged by its partition's latest run: a file whose content was
not the last ingested under its name is run again. Run keys are `<name>:<sha256[:12]>` (plus
`:<n>` for the n-th run of that content): the same bytes dropped twice are not run twice.
"""

from pathlib import Path

import dagster as dg

from tm2_pipeline.assets.raw import SHA256_TAG
from tm2_pipeline.jobs import ingest_tm2_file
from tm2_pipeline.landing import (
    LandedFile,
    archive,
    bounded_name,
    read_cursor,
    remembered,
    scan_landing_dir,
    sha256_of_file,
    stable_files,
    write_cursor,
    write_error_note,
)
from tm2_pipeline.partitions import PARTITION_TAG, partition_key_problem, tm2_csv_files, unfinished_run
from tm2_pipeline.pipeline_config import PipelineConfig
from tm2_pipeline.run_outcome import FAILED, REFUSED, SUCCEEDED, classify_run

MAX_ATTEMPTS = 3
FILE_VERSION_TAG = "tm2/file_version"
ATTEMPT_TAG = "tm2/attempt"


def ingest_run_request(
    name: str, source: Path, sha256: str, attempt: int = 1, earlier_runs: int = 0
) -> dg.RunRequest:
    """`earlier_runs` of this content make the run key unique: Dagster skips a run key seen before."""
    version = f"{name}:{sha256[:12]}"
    return dg.RunRequest(
        partition_key=name,
        run_key=version if earlier_runs == 0 else f"{version}:{earlier_runs + 1}",
        run_config={"ops": {"raw_tm2_file": {"config": {"source_path": str(source)}}}},
        tags={FILE_VERSION_TAG: version, ATTEMPT_TAG: str(attempt), SHA256_TAG: sha256},
    )


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
        previous = read_cursor(context.cursor)
        current = scan_landing_dir(landing_dir)
        files = remembered(current, previous)
        known_partitions = set(context.instance.get_dynamic_partitions(tm2_csv_files.name))

        run_requests: list[dg.RunRequest] = []
        new_partitions: list[str] = []
        for name in stable_files(current, {name: landed.seen for name, landed in previous.items()}):
            if len(run_requests) >= max_runs_per_tick:
                break
            try:
                request = _next_step(context, pipeline, landing_dir / name, files[name])
            except Exception as error:  # one file's surprise must not hold back the others
                context.log.warning(f"{name!r} skipped this tick: {_error_kind(error)}")
                continue
            if request is None:
                continue
            run_requests.append(request)
            if name not in known_partitions:
                new_partitions.append(name)
                known_partitions.add(name)

        # Remember only files still in the landing dir: the cursor stays as small as the directory.
        remaining = {name: landed for name, landed in files.items() if (landing_dir / name).exists()}
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=[tm2_csv_files.build_add_request(new_partitions)]
            if new_partitions
            else [],
            cursor=write_cursor(remaining),
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
        _move_to_failed(pipeline, source, sha256, note=f"refused: {problem}")
        return None
    instance = context.instance
    # Two runs of one partition would share its tables between steps: the later file waits its turn.
    if unfinished_run(instance, name) is not None:
        return None
    records = instance.get_run_records(dg.RunsFilter(tags={PARTITION_TAG: name}), limit=1)
    latest = records[0] if records else None
    if landed.arrived_after_run is None:
        landed.arrived_after_run = latest.storage_id if latest else 0
    version = f"{name}:{sha256[:12]}"
    if latest is None or latest.dagster_run.tags.get(FILE_VERSION_TAG) != version:
        # Never run, or other content was ingested under this name since (A, B, then A again).
        return _request(context, source, sha256, attempt=1)
    run = latest.dagster_run
    outcome = classify_run(instance, run.run_id, run.status == dg.DagsterRunStatus.SUCCESS)
    if outcome.status == SUCCEEDED:
        archive(source, pipeline.home.processed_dir(pipeline.today()), sha256, keep_source=False)
        return None
    # Attempts count from the file's arrival. A file put back in landing after it failed, was blocked
    # or refused is a person asking for a new run (the outage is over, TM2_REJECT_BLOCK was raised).
    attempt = int(run.tags.get(ATTEMPT_TAG, "1")) if latest.storage_id > landed.arrived_after_run else 0
    if attempt == 0:
        context.log.info(
            f"{version}: put back in landing after its last run was {outcome.status}; running it"
        )
        return _request(context, source, sha256, attempt=1)
    if outcome.status == FAILED and attempt < MAX_ATTEMPTS:
        context.log.info(f"{version}: attempt {attempt} failed; trying again")
        return _request(context, source, sha256, attempt=attempt + 1)
    if outcome.status == REFUSED:
        # The raw step wrote this note under the file's name; this one follows the archived name.
        note = f"refused ({outcome.error})" if outcome.error else None
    else:
        detail = f"after {attempt} attempts: " if outcome.status == FAILED else ""
        note = f"{outcome.status} {detail}{outcome.error}"
    _move_to_failed(pipeline, source, sha256, note=note)
    return None


def _request(context: dg.SensorEvaluationContext, source: Path, sha256: str, attempt: int) -> dg.RunRequest:
    version = f"{source.name}:{sha256[:12]}"
    earlier_runs = context.instance.get_runs_count(dg.RunsFilter(tags={FILE_VERSION_TAG: version}))
    if earlier_runs and attempt == 1:
        context.log.info(f"{version}: not the content last ingested under this name; ingesting it again")
    return ingest_run_request(source.name, source, sha256, attempt, earlier_runs)


def _move_to_failed(pipeline: PipelineConfig, source: Path, sha256: str, *, note: str | None) -> None:
    """The file goes to failed/ under a name that leaves room for its note, `<that name>.error.txt`."""
    failed_dir = pipeline.home.failed_dir
    kept = archive(source, failed_dir, sha256, keep_source=False, name=bounded_name(source.name, sha256))
    if note is not None:
        write_error_note(failed_dir, kept.name, note)
