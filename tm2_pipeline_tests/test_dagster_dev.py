"""Issue 2, done when: `dagster dev -w workspace.yaml` loads the pipeline headless, and the UI (its
GraphQL API) shows the four assets with their checks, the landing sensor, the nightly schedule, and
the run that `tm2 ingest` made beforehand on the same DAGSTER_HOME.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tm2_pipeline.embedded.secantus import EmbeddedSecantus
from tm2_pipeline_tests.dagster_dev import REPO_ROOT, DagsterDev, isolated_env
from tm2_pipeline_tests.pipeline_runs import CHECKS_BY_ASSET

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

SAMPLE = REPO_ROOT / "data" / "tm2_sample.csv"

ASSETS_AND_CHECKS = """
{ assetNodes { assetKey { path }
    assetChecksOrError { __typename ... on AssetChecks { checks { name blocking } } } } }
"""
SENSORS_AND_SCHEDULES = """
{ repositoriesOrError { __typename
    ... on RepositoryConnection { nodes { name location { name }
        sensors { name sensorState { status } }
        schedules { name cronSchedule executionTimezone scheduleState { status } } } }
    ... on PythonError { message } } }
"""
RUNS_BY_TAG = """
query RunsByTag($key: String!, $value: String!) {
  runsOrError(filter: { tags: [{ key: $key, value: $value }] }) { __typename
    ... on Runs { results { runId jobName status tags { key value } } }
    ... on PythonError { message } } }
"""


def tm2_command() -> list[str]:
    """The venv's `tm2` entry point (the one the README tells users to run)."""
    script = Path(sys.executable).with_name("tm2")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tm2_pipeline.cli"]


def run_tm2_ingest(env: dict[str, str], cwd: Path, *files: Path) -> list[dict]:
    done = subprocess.run(
        [*tm2_command(), "ingest", *map(str, files), "--json"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"tm2 ingest exited {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


@pytest.fixture
def tm2_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "tm2_home"
    home.mkdir()
    yield home
    EmbeddedSecantus(home).stop()  # started by the first run that needed the store


def test_dagster_dev_shows_the_pipeline_and_the_cli_run(tm2_home: Path, tmp_path: Path) -> None:
    env = isolated_env(tm2_home)
    [report] = run_tm2_ingest(env, tmp_path, SAMPLE)
    assert report["status"] == "succeeded" and report["rows"] == 102

    with DagsterDev(env, log_path=tmp_path / "dagster-dev.log", cwd=tmp_path) as dev:
        assert dev.location_errors() == {}, dev.log_tail()

        nodes = dev.graphql(ASSETS_AND_CHECKS)["assetNodes"]
        checks = {}
        for node in nodes:
            outcome = node["assetChecksOrError"]
            assert outcome["__typename"] == "AssetChecks", outcome
            checks["/".join(node["assetKey"]["path"])] = {check["name"] for check in outcome["checks"]}
        assert checks == CHECKS_BY_ASSET

        repositories = dev.graphql(SENSORS_AND_SCHEDULES)["repositoriesOrError"]
        assert repositories["__typename"] == "RepositoryConnection", repositories
        sensors = {s["name"]: s for repo in repositories["nodes"] for s in repo["sensors"]}
        schedules = {s["name"]: s for repo in repositories["nodes"] for s in repo["schedules"]}
        assert sensors["tm2_landing_sensor"]["sensorState"]["status"] == "RUNNING"
        nightly = schedules["nightly_openmrs_retry"]
        assert nightly["cronSchedule"] == "0 2 * * *"
        assert nightly["scheduleState"]["status"] == "RUNNING"

        # The CLI's run is in the same instance, so the UI lists it, found by the file's content hash.
        runs = dev.graphql(RUNS_BY_TAG, {"key": "tm2/sha256", "value": report["sha256"]})["runsOrError"]
        assert runs["__typename"] == "Runs", runs
        [run] = runs["results"]
        tags = {tag["key"]: tag["value"] for tag in run["tags"]}
        assert run["jobName"] == "ingest_tm2_file"
        assert run["status"] == "SUCCESS"
        assert tags["tm2/started_by"] == "cli"
        assert tags["dagster/partition"] == SAMPLE.name
