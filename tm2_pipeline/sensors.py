"""The landing-directory sensor: one dynamic partition per file name, one run per file content.

Each tick: scan the landing dir (os.scandir), keep per-file (size, mtime) in the cursor, and for
each file that has been stable for a tick either request its run, wait for it, or move the file out
(processed/<date>/ on success; failed/ with <name>.error.txt when refused, blocked, or failed three
times). Run keys are `<name>:<sha256[:12]>` (plus `:<attempt>` for retries): a corrected file with
the same name is a new run; the same bytes dropped twice are not.
"""

import json
from pathlib import Path

import dagster as dg

from tm2_pipeline.jobs import ingest_tm2_file
from tm2_pipeline.landing import archive, scan_landing_dir, sha256_of_file, stable_files, write_error_note
from tm2_pipeline.partitions import partition_key_problem, tm2_csv_files
from tm2_pipeline.pipeline_config import PipelineConfig
from tm2_pipeline.run_outcome import FAILED, REFUSED, SUCCEEDED, classify_run

MAX_ATTEMPTS = 3
FILE_VERSION_TAG = "tm2/file_version"
ATTEMPT_TAG = "tm2/attempt"


def ingest_run_request(name: str, source: Path, sha256: str, attempt: int = 1) -> dg.RunRequest:
    version = f"{name}:{sha256[:12]}"
    return dg.RunRequest(
        partition_key=name,
        run_key=version if attempt == 1 else f"{version}:{attempt}",
        run_config={"ops": {"raw_tm2_file": {"config": {"source_path": str(source)}}}},
        tags={FILE_VERSION_TAG: version, ATTEMPT_TAG: str(attempt), "tm2/sha256": sha256},
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
        previous = {name: tuple(seen) for name, seen in json.loads(context.cursor or "{}").items()}
        current = scan_landing_dir(landing_dir)
        known_partitions = set(context.instance.get_dynamic_partitions(tm2_csv_files.name))

        run_requests: list[dg.RunRequest] = []
        new_partitions: list[str] = []
        for name in stable_files(current, previous):
            if len(run_requests) >= max_runs_per_tick:
                break
            source = landing_dir / name
            sha256 = sha256_of_file(source)
            if problem := partition_key_problem(name):
                # Refused before any run, as `tm2 ingest` refuses it: no partition is ever made of it.
                _move_to_failed(pipeline, source, sha256, note=f"refused: {problem}")
                continue
            request = _next_step(context, pipeline, source, sha256)
            if request is None:
                continue
            run_requests.append(request)
            if name not in known_partitions:
                new_partitions.append(name)
                known_partitions.add(name)

        # Remember only files still in the landing dir: the cursor stays as small as the directory.
        remaining = {name: seen for name, seen in current.items() if (landing_dir / name).exists()}
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=[tm2_csv_files.build_add_request(new_partitions)]
            if new_partitions
            else [],
            cursor=json.dumps(remaining, sort_keys=True),
        )

    return tm2_landing_sensor


def _next_step(
    context: dg.SensorEvaluationContext, pipeline: PipelineConfig, source: Path, sha256: str
) -> dg.RunRequest | None:
    """A run request for this file version, or None (its run is under way, or the file was moved out)."""
    version = f"{source.name}:{sha256[:12]}"
    runs = context.instance.get_runs(filters=dg.RunsFilter(tags={FILE_VERSION_TAG: version}), limit=1)
    if not runs:
        return ingest_run_request(source.name, source, sha256)
    latest = runs[0]
    if not latest.is_finished:
        return None
    outcome = classify_run(context.instance, latest.run_id, latest.status == dg.DagsterRunStatus.SUCCESS)
    if outcome.status == SUCCEEDED:
        archive(source, pipeline.home.processed_dir(pipeline.today()), sha256, keep_source=False)
        return None
    attempt = int(latest.tags.get(ATTEMPT_TAG, "1"))
    if outcome.status == FAILED and attempt < MAX_ATTEMPTS:
        context.log.info(f"{version}: attempt {attempt} failed; trying again")
        return ingest_run_request(source.name, source, sha256, attempt + 1)
    note = None  # REFUSED: the raw asset already wrote the refusal note
    if outcome.status != REFUSED:
        detail = f"after {attempt} attempts: " if outcome.status == FAILED else ""
        note = f"{outcome.status} {detail}{outcome.error}"
    _move_to_failed(pipeline, source, sha256, note=note)
    return None


def _move_to_failed(pipeline: PipelineConfig, source: Path, sha256: str, *, note: str | None) -> None:
    """The file goes to failed/, with a note saying why when one is given."""
    if note is not None:
        write_error_note(pipeline.home.failed_dir, source.name, note)
    archive(source, pipeline.home.failed_dir, sha256, keep_source=False)
