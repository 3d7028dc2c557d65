"""`tm2 ingest`: run the ingestion job for one file in-process on the instance at DAGSTER_HOME.

The report is built from the run's own events (the counts each asset recorded in its metadata), so
what the CLI prints is exactly what the Dagster UI shows for that run.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster import DagsterEventType

from tm2_pipeline.abandoned_runs import end_abandoned_runs, in_process_run_tags
from tm2_pipeline.assets.validated import reject_rate_message, reject_rate_outcome
from tm2_pipeline.definitions import build_definitions
from tm2_pipeline.landing import sha256_of_file
from tm2_pipeline.partitions import latest_run, partition_key_problem, tm2_csv_files, unfinished_run
from tm2_pipeline.reading import FileRefused
from tm2_pipeline.run_outcome import BLOCKED, FAILED, REFUSED, SUCCEEDED, classify_run
from tm2_pipeline.sensors import ingest_run_request
from tm2_pipeline.settings import Settings
from tm2_pipeline.store.ingestions import COUNT_NAMES
from tm2_pipeline.submission_run import IN_OPENMRS, NOT_FINAL, WAITING_FOR_A_PERSON
from tm2_pipeline.validation import validate_tm2_export

REPO_DAGSTER_YAML = Path(__file__).resolve().parent.parent / "dagster.yaml"
# Which asset's metadata holds which count (metadata name -> report field).
METADATA_COUNTS = {
    "validated_tm2_records": {
        "rows": "rows",
        "accepted": "accepted",
        "duplicates": "duplicates",
        "rejected": "rejected",
    },
    "tm2_mongo_records": {
        "inserted": "inserted",
        "updated": "updated",
        "unchanged": "unchanged",
        "not_in_this_version": "not_in_this_version",
    },
    "openmrs_submissions": {
        "submitted_this_run": "submitted",
        IN_OPENMRS: "in_openmrs",  # sent by this run or an earlier one, or found already there
        NOT_FINAL: "submission_failed",
        WAITING_FOR_A_PERSON: "needs_a_person",  # ambiguous patient, rejected by the server
    },
}


@dataclass
class IngestReport:
    file: str
    sha256: str
    status: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_NAMES, 0))
    error: str | None = None
    run_id: str | None = None

    def as_json(self) -> dict:
        report = {"file": self.file, "sha256": self.sha256, **self.counts, "status": self.status}
        if self.status != SUCCEEDED:
            report["error"] = self.error or self.status
        return report


def prepare_dagster_home(settings: Settings) -> Path:
    """Point DAGSTER_HOME at the settings' instance dir, seeded with the repo's dagster.yaml."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(REPO_DAGSTER_YAML, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def instance_config_is_outdated(home: Path) -> bool:
    """Whether DAGSTER_HOME's dagster.yaml differs from the repo's: seeded once, it is never
    overwritten (it may hold the user's own changes), so a newer one is only pointed out."""
    seeded = home / "dagster.yaml"
    return seeded.exists() and seeded.read_bytes() != REPO_DAGSTER_YAML.read_bytes()


def dry_run(path: Path, settings: Settings, today) -> IngestReport:
    """Validate and report; write nothing anywhere (no Dagster run, no store, no file copies)."""
    report = IngestReport(file=path.name, sha256=sha256_of_file(path), status=SUCCEEDED)
    if problem := partition_key_problem(path.name):  # refused by a real ingest too
        report.status, report.error = REFUSED, problem
        return report
    try:
        # Counts only: records and rejects are not kept (flat memory whatever the file's size).
        result = validate_tm2_export(
            path, today=today, day_first=settings.day_first, sink=_discard, reject_sink=_discard
        )
    except FileRefused as refusal:
        report.status, report.error = REFUSED, f"{refusal.reason}: {refusal.message}"
        return report
    report.counts.update(
        rows=result.rows, accepted=result.accepted, duplicates=result.duplicates, rejected=result.rejected
    )
    passed, severity = reject_rate_outcome(
        result.rows, result.rejected, settings.reject_warn, settings.reject_block
    )
    if not passed and severity == dg.AssetCheckSeverity.ERROR:
        report.status = BLOCKED
        report.error = reject_rate_message(
            result.rows, result.rejected, settings.reject_warn, settings.reject_block, dry_run=True
        )
    return report


def _discard(_: object) -> None:
    pass


class Ingestor:
    """Runs `ingest_tm2_file` for files, one run each, on one instance with one set of resources."""

    def __init__(
        self,
        settings: Settings,
        instance: dg.DagsterInstance,
        *,
        assets: Sequence[str] | None = None,
        started_by: str = "cli",
    ) -> None:
        """`assets`: run only these of the job's assets (the benchmark leaves OpenMRS out)."""
        self.instance = instance
        self.job = build_definitions(settings).resolve_job_def("ingest_tm2_file")
        self.asset_selection = [dg.AssetKey(asset) for asset in assets] if assets else None
        self.started_by = started_by

    def ingest(self, path: Path) -> IngestReport:
        path = path.resolve()
        sha256 = sha256_of_file(path)
        if problem := partition_key_problem(path.name):
            return IngestReport(file=path.name, sha256=sha256, status=REFUSED, error=problem)
        # In-process runs skip the run queue and its one-run-per-file-name limit: checked here, after
        # ending the runs whose process died (they would block the name for ever, or a day).
        _, unfinished = end_abandoned_runs(self.instance, path.name)
        if (running := unfinished_run(unfinished, latest_run(self.instance, path.name))) is not None:
            return IngestReport(
                file=path.name,
                sha256=sha256,
                status=FAILED,
                error=f"a run of {path.name} is under way or about to be retried (run {running.run_id}, "
                f"{running.status.value.lower()}): try again when it has ended, or cancel it in the "
                "Dagster UI",
            )
        self.instance.add_dynamic_partitions(tm2_csv_files.name, [path.name])
        request = ingest_run_request(path.name, path, sha256)
        run_id = str(uuid.uuid4())  # Dagster's own run ids are uuid4 too; chosen here for the tag
        result = self.job.execute_in_process(
            run_id=run_id,
            instance=self.instance,
            partition_key=path.name,
            # The run's own log stays in the instance (the UI shows it, stack traces included); the
            # terminal gets the outcome and its reason from the CLI, not Dagster's step failures.
            run_config={**request.run_config, "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            tags={**request.tags, "tm2/started_by": self.started_by, **in_process_run_tags(run_id)},
            raise_on_error=False,
            asset_selection=self.asset_selection,
        )
        outcome = classify_run(self.instance, result.run_id, result.success)
        report = IngestReport(
            file=path.name, sha256=sha256, status=outcome.status, error=outcome.error, run_id=result.run_id
        )
        if outcome.status != REFUSED:
            report.counts.update(self._counts_from_run(result.run_id))
        if outcome.status == FAILED and not report.error:
            report.error = "the run failed; see the Dagster UI"
        return report

    def _counts_from_run(self, run_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
            materialization = entry.dagster_event.event_specific_data.materialization
            wanted = METADATA_COUNTS.get(materialization.asset_key.to_user_string(), {})
            for name, value in materialization.metadata.items():
                if name in wanted:
                    counts[wanted[name]] = int(value.value)
        # A failed submission step materializes nothing: its Failure says where the records stand.
        submission_counts = METADATA_COUNTS["openmrs_submissions"]
        for entry in self.instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
            failure = entry.dagster_event.step_failure_data.user_failure_data
            if failure is not None and NOT_FINAL in failure.metadata:
                for name, value in failure.metadata.items():
                    if name in submission_counts:
                        counts[submission_counts[name]] = int(value.value)
        return counts
