"""The `tm2` command: ingest files, look at the store, run the OpenMRS sandbox, open the UI.

Exit codes: 0 all good, 1 a file was not ingested (refused, blocked, failed) or a lookup found
nothing, 2 a usage error. Results go to stdout (only JSON lines with --json), progress to stderr.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from tm2_pipeline.home import Tm2Home
from tm2_pipeline.openmrs.states import CONFIRMED_STATES, SubmissionState
from tm2_pipeline.settings import Settings, SettingsError, load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as error:
        raise click.UsageError(str(error)) from None


def _say(message: str) -> None:
    click.echo(message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """tm2-pipeline: ICD-11 TM2 clinic exports -> MongoDB -> OpenMRS."""


@main.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object per file, nothing else, on stdout."
)
@click.option("--dry-run", is_flag=True, help="Validate and report; write nothing anywhere.")
def ingest(files: tuple[Path, ...], as_json: bool, dry_run: bool) -> None:
    """Ingest FILE(s): raw -> validated -> MongoDB -> OpenMRS, one Dagster run per file."""
    from tm2_pipeline.ingestion import Ingestor, prepare_dagster_home
    from tm2_pipeline.ingestion import dry_run as validate_only

    settings = _settings()
    if dry_run:
        today = datetime.now(ZoneInfo(settings.timezone)).date()
        reports = [validate_only(path, settings, today) for path in files]
    else:
        from tm2_pipeline.compute_logs import in_process_instance

        home = prepare_dagster_home(settings)
        if settings.uses_embedded_store or settings.uses_sandbox:
            _say(_embedded_notice(settings))
        # Ctrl-C reaches Dagster's log-capture helpers too: they must not print tracebacks.
        with in_process_instance(home) as instance:
            ingestor = Ingestor(settings, instance)
            reports = []
            for path in files:
                _say(f"ingesting {path.name} ...")
                reports.append(ingestor.ingest(path))
    for report in reports:
        click.echo(json.dumps(report.as_json(), ensure_ascii=False) if as_json else _human(report, dry_run))
    sys.exit(0 if all(report.status == "succeeded" for report in reports) else 1)


def _embedded_notice(settings: Settings) -> str:
    parts = []
    if settings.uses_embedded_store:
        parts.append(f"the embedded store (SecantusDB under {settings.home_dir / 'mongo'})")
    if settings.uses_sandbox:
        api = ", FHIR API" if settings.openmrs_api == "fhir" else ""
        parts.append(f"the OpenMRS sandbox (emulator, in-process{api})")
    return "Using " + " and ".join(parts) + "; set MONGODB_URI / OPENMRS_BASE_URL for real servers."


def _human(report, dry_run: bool) -> str:
    c = report.counts
    lines = [
        f"{report.file}  [{report.status}{' (dry run)' if dry_run else ''}]  sha256 {report.sha256[:12]}",
        f"  rows {c['rows']}: accepted {c['accepted']}, "
        f"duplicates {c['duplicates']}, rejected {c['rejected']}",
    ]
    if not dry_run:
        lines.append(
            f"  MongoDB: inserted {c['inserted']}, updated {c['updated']}, unchanged {c['unchanged']}"
        )
        if c["not_in_this_version"]:
            lines.append(
                f"  note: {c['not_in_this_version']} records stored from other versions of this file "
                "name are not in this one; they stay in MongoDB and OpenMRS (a correction never retracts)"
            )
        lines.append(f"  OpenMRS: {_openmrs_counts(c)}")
    if report.error:
        lines.append(f"  error: {report.error}")
    if c["rejected"] and not dry_run:
        lines.append(f"  see the rejected rows with: tm2 rejects {report.file}")
    return "\n".join(lines)


def _openmrs_counts(c: dict[str, int]) -> str:
    return (
        f"in OpenMRS {c['in_openmrs']} (sent by this run {c['submitted']}), "
        f"to retry {c['submission_failed']}, waiting for a person {c['needs_a_person']}"
    )


@contextmanager
def _mongo(settings: Settings) -> Iterator:
    """The configured Mongo resource, initialized as in a run; outages and refusals become one clear line.

    Only for commands that read: with the embedded store, a TM2_HOME never used holds nothing, and
    starting a new, empty store there would answer "never ingested" for a file ingested elsewhere.
    """
    if settings.uses_embedded_store and not Tm2Home(settings.home_dir).mongo_dir.exists():
        _say(
            f"error: nothing was ever ingested with TM2_HOME={settings.home_dir} (the embedded store "
            "lives there): run this where you ran tm2 ingest, or set TM2_HOME or MONGODB_URI"
        )
        sys.exit(1)
    from tm2_pipeline.definitions import build_resources
    from tm2_pipeline.embedded.secantus import EmbeddedStoreError
    from tm2_pipeline.resources.mongo import MongoRefused, MongoSettingsError, MongoUnavailable

    try:
        with build_resources(settings)["mongo"].process_config_and_initialize_cm() as mongo:
            yield mongo
    except (MongoUnavailable, MongoRefused, MongoSettingsError, EmbeddedStoreError) as error:
        _say(f"error: {error}")
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """Counts of records, rejects and submissions, and the last 10 files."""
    from tm2_pipeline.mongo_uri import describe_mongo_target

    settings = _settings()
    with _mongo(settings) as mongo:
        summary = _status_summary(mongo)
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False))
        return
    # Which store answered: run from a subdirectory, the default TM2_HOME (./.tm2) is another one.
    uri = settings.mongodb_uri.get_secret_value() if settings.mongodb_uri else None
    click.echo(
        f"store: {describe_mongo_target(uri, settings.home_dir)}, database {settings.mongodb_database}"
    )
    click.echo(f"records: {summary['records']}   rejects: {summary['rejects']}")
    states = ", ".join(f"{state} {count}" for state, count in sorted(summary["submissions"].items()))
    click.echo(f"submissions: {states or 'none'}")
    if set(summary["submissions"]) - {state.value for state in CONFIRMED_STATES}:
        click.echo("  the records not in OpenMRS, and why: tm2 submissions")
    for f in summary["files"]:
        click.echo(f"  {f['at']}  {f['status']:<10} {f['file']}  {f['sha256'][:12]}")


def _status_summary(mongo) -> dict:
    return {
        "records": mongo.records().count(),
        "rejects": mongo.rejects().count(),
        "submissions": mongo.submissions().state_counts(),
        "files": [
            {"file": f["file"], "sha256": f["sha256"], "status": f["status"], "at": _iso(f.get("at"))}
            for f in mongo.ingestions().recent(10)
        ],
    }


def _iso(value) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else value


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="One object per rejected row.")
@click.option("--with-values", is_flag=True, help="Also print the raw values (they hold patient ids).")
def rejects(name: str, as_json: bool, with_values: bool) -> None:
    """The rejected rows of NAME's latest ingestion (NAME = the file's base name).

    Row N is the file's Nth data row after the header (line N + 1 unless a quoted value spans lines).
    """
    from tm2_pipeline.store.ingestions import IngestionStatus

    with _mongo(_settings()) as mongo:
        latest = mongo.ingestions().latest_for_file(name)
        if latest is None:
            _say(f"{name} was never ingested")
            sys.exit(1)
        if latest["status"] == IngestionStatus.REFUSED:
            # No row of it was read: there are no rejected rows, only the reason it was refused.
            reason = latest.get("error") or "see tm2 status"
            _say(f"{name} was refused as a whole, so no row was read: {reason}")
            sys.exit(1)
        shown = 0
        # Printed as they are read: a file can have hundreds of thousands of rejected rows.
        for reject in mongo.rejects().iter_for_file(latest["sha256"]):
            shown += 1
            row = {"row": reject["row"], "reasons": reject["reasons"]}
            if with_values:
                row["values"] = reject["values"]
            if as_json:
                click.echo(json.dumps(row, ensure_ascii=False))
            else:
                reasons = "; ".join(
                    f"{r['column']}: {r['check']} ({r['message']})" for r in reject["reasons"]
                )
                click.echo(f"row {reject['row']}: {reasons}")
                if with_values:
                    click.echo(f"  values: {json.dumps(reject['values'], ensure_ascii=False)}")
        if not shown:
            _say(f"{name}: no rejected rows in its latest ingestion ({latest['status']})")


@main.command()
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([state.value for state in SubmissionState]),
    help="Only records in this state (repeatable); default: every state but submitted/already_present.",
)
@click.option("--json", "as_json", is_flag=True, help="One object per record.")
@click.option("--with-values", is_flag=True, help="Also print each record's patient id.")
def submissions(states: tuple[str, ...], as_json: bool, with_values: bool) -> None:
    """The records not in OpenMRS (yet), with their file, row and why they wait.

    ambiguous_patient and rejected_by_server wait for a person, and so do patient_not_found and
    concept_not_found once TM2_PATIENT_RETRY_DAYS have passed: fix the cause, then `tm2 retry --release`.
    """
    from tm2_pipeline.submission_listing import NOT_IN_OPENMRS, describe, listed_submissions

    wanted = [SubmissionState(state) for state in states] or list(NOT_IN_OPENMRS)
    with _mongo(_settings()) as mongo:
        records = mongo.records()
        rows = listed_submissions(
            mongo.submissions().entries_in(wanted), records.find_by_keys, with_values=with_values
        )
        shown = 0
        for row in rows:
            shown += 1
            click.echo(json.dumps(row, ensure_ascii=False) if as_json else describe(row))
    which = ", ".join(states) if states else "not in OpenMRS"
    if not shown:
        _say(f"no records ({which})")
    else:
        _say(f"{shown} records ({which}); once the cause is fixed, tm2 retry --release sends them again")


@main.command()
@click.option(
    "--release",
    is_flag=True,
    help="Also send again the records waiting for a person (see tm2 submissions), once the cause is "
    "fixed; each is looked up in OpenMRS first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, nothing else, on stdout.")
def retry(release: bool, as_json: bool) -> None:
    """Run the nightly OpenMRS retry now (one Dagster run): records left to retry, and what a run
    whose process died stored but never sent."""
    from tm2_pipeline.compute_logs import in_process_instance
    from tm2_pipeline.ingestion import prepare_dagster_home
    from tm2_pipeline.retry_now import retry_now

    settings = _settings()
    home = prepare_dagster_home(settings)
    if settings.uses_embedded_store or settings.uses_sandbox:
        _say(_embedded_notice(settings))
    with in_process_instance(home) as instance:
        report = retry_now(settings, instance, release=release)
    if as_json:
        click.echo(json.dumps(report.as_json(), ensure_ascii=False))
    else:
        c = report.counts
        lines = [f"OpenMRS retry  [{report.status}]  run {report.run_id}"]
        if release:
            lines.append(f"  released {c['released']} records waiting for a person")
        if report.retried:
            lines.append(f"  retried {c['records']}: {_openmrs_counts(c)}")
        if report.error:
            lines.append(f"  error: {report.error}")
        click.echo("\n".join(lines))
    sys.exit(0 if report.status == "succeeded" else 1)


@main.group()
def store() -> None:
    """The embedded MongoDB-compatible store (SecantusDB) of this TM2_HOME."""


@store.command("status")
def store_status() -> None:
    from tm2_pipeline.embedded.secantus import EmbeddedSecantus

    info = EmbeddedSecantus(_settings().home_dir).status()
    if info is None:
        click.echo("embedded store: not running")
        sys.exit(1)
    click.echo(f"embedded store: running, pid {info.pid}, {info.uri}")


@store.command("stop")
def store_stop() -> None:
    from tm2_pipeline.embedded.secantus import EmbeddedSecantus

    stopped = EmbeddedSecantus(_settings().home_dir).stop()
    click.echo("embedded store: stopped" if stopped else "embedded store: was not running")


@main.command("openmrs-sandbox")
@click.option("--port", type=click.IntRange(1, 65535), required=True)
@click.option("--fault-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option("--latency-ms", type=click.IntRange(0), default=0, show_default=True)
@click.option("--username", default="admin", show_default=True)
@click.option("--password", default="Admin123", show_default=True)
def openmrs_sandbox(port: int, fault_rate: float, latency_ms: int, username: str, password: str) -> None:
    """Serve the OpenMRS emulator at http://127.0.0.1:PORT/openmrs (REST ws/rest/v1, FHIR ws/fhir2/R4)."""
    from tm2_pipeline.openmrs.emulator.server import serve_sandbox

    _require_free_port(port)
    _say(f"OpenMRS sandbox on http://127.0.0.1:{port}/openmrs (user {username})")
    serve_sandbox(port, fault_rate=fault_rate, latency_ms=latency_ms, username=username, password=password)


def _require_free_port(port: int) -> None:
    """Exit with one line when something listens on 127.0.0.1:PORT already."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is fine
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            _say(f"error: port {port} on 127.0.0.1 is in use (another tm2 ui or sandbox?); use --port")
            sys.exit(1)


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True)
def ui(port: int) -> None:
    """Start the Dagster UI and daemon (`dagster dev`) on the same DAGSTER_HOME as `tm2 ingest`."""
    from tm2_pipeline.foreground import run_in_foreground
    from tm2_pipeline.ingestion import instance_config_is_outdated, prepare_dagster_home

    _require_free_port(port)  # else dagster dev would start a second daemon, then fail to bind
    settings = _settings()
    home = prepare_dagster_home(settings)
    settings.landing_dir.mkdir(parents=True, exist_ok=True)
    _say(f"files dropped into {settings.landing_dir} are ingested by the landing sensor")
    if instance_config_is_outdated(home):
        _say(
            f"note: {home / 'dagster.yaml'} differs from {REPO_ROOT / 'dagster.yaml'} (run limits, run "
            "monitoring, a log capture quiet on Ctrl-C); copy it over unless you changed it on purpose"
        )
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(REPO_ROOT / "workspace.yaml"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    sys.exit(run_in_foreground(command))


if __name__ == "__main__":
    main()
