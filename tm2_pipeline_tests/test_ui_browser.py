"""Issue 6: the whole loop as a user sees it. A file dropped into the landing dir is picked up by the
sensor under `dagster dev`, its run succeeds, the file ends in processed/<date>/, and headless
Chromium shows the four assets on the asset graph with their checks passed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tm2_pipeline.embedded.secantus import EmbeddedSecantus
from tm2_pipeline_tests.dagster_dev import REPO_ROOT, DagsterDev, DagsterDevError, isolated_env
from tm2_pipeline_tests.pipeline_runs import CHECKS_BY_ASSET

pytestmark = [pytest.mark.ui, pytest.mark.timeout(600)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
SAMPLE = REPO_ROOT / "data" / "tm2_sample.csv"
SENSOR = "tm2_landing_sensor"
TIMEZONE = "Asia/Kolkata"  # the pipeline's "today" (TM2_TIMEZONE), pinned for this test

SENSOR_RUNS = """
query SensorRuns($value: String!) {
  runsOrError(filter: { tags: [{ key: "dagster/sensor_name", value: $value }] }) { __typename
    ... on Runs { results { runId status tags { key value } } }
    ... on PythonError { message } } }
"""
RUN_ERRORS = """
query RunErrors($runId: ID!) {
  logsForRun(runId: $runId) { __typename
    ... on EventConnection { events { __typename
        ... on ExecutionStepFailureEvent { stepKey error { message } }
        ... on RunFailureEvent { message error { message } } } } } }
"""
CHECK_EXECUTIONS = """
{ assetNodes { assetKey { path }
    assetChecksOrError { ... on AssetChecks { checks { name
        executionForLatestMaterialization { runId status } } } } } }
"""


@pytest.fixture
def tm2_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "tm2_home"
    home.mkdir()
    yield home
    EmbeddedSecantus(home).stop()  # started by the run that needed the store


def drop_into_landing(landing: Path, source: Path) -> Path:
    """How a clinic's upload lands: written under a `.part` name, then renamed atomically."""
    landing.mkdir(parents=True, exist_ok=True)
    partial = landing / f"{source.name}.part"
    shutil.copyfile(source, partial)
    final = landing / source.name
    os.replace(partial, final)
    return final


def wait_for_sensor_run(dev: DagsterDev, timeout_s: float) -> str:
    """The run id of the sensor's first successful run; a failed run fails the test with its errors."""
    deadline = time.monotonic() + timeout_s
    seen: list[dict] = []
    while time.monotonic() < deadline:
        runs = dev.graphql(SENSOR_RUNS, {"value": SENSOR})["runsOrError"]
        assert runs["__typename"] == "Runs", runs
        seen = runs["results"]
        for run in seen:
            if run["status"] == "SUCCESS":
                return run["runId"]
            if run["status"] in ("FAILURE", "CANCELED"):
                errors = run_errors(dev, run["runId"])
                raise AssertionError(f"sensor run {run['runId']} ended {run['status']}: {errors}")
        time.sleep(2)
    raise AssertionError(f"no successful {SENSOR} run in {timeout_s:.0f} s; runs: {seen}\n{dev.log_tail()}")


def run_errors(dev: DagsterDev, run_id: str) -> list[str]:
    logs = dev.graphql(RUN_ERRORS, {"runId": run_id})["logsForRun"]
    errors = []
    for event in logs.get("events", []):
        error = event.get("error") or {}
        if event["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent"):
            errors.append(f"{event.get('stepKey') or 'run'}: {error.get('message') or event.get('message')}")
    return errors


def wait_for_file(pattern_dir: Path, name: str, timeout_s: float) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = sorted(pattern_dir.glob(f"*/{name}"))
        if found:
            return found[0]
        time.sleep(1)
    raise AssertionError(f"{name} never reached {pattern_dir}/<date>/ within {timeout_s:.0f} s")


def test_landed_file_flows_through_and_the_asset_graph_shows_it(tm2_home: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium; .ci/run does it as root)")
    playwright = pytest.importorskip("playwright.sync_api", reason="the `playwright` package (dev group)")

    env = isolated_env(tm2_home, TM2_SENSOR_INTERVAL_S="5", TM2_TIMEZONE=TIMEZONE)
    landing = tm2_home / "landing"
    with DagsterDev(env, log_path=tmp_path / "dagster-dev.log", cwd=tmp_path) as dev:
        assert dev.location_errors() == {}, dev.log_tail()
        day_before = datetime.now(ZoneInfo(TIMEZONE)).date()
        drop_into_landing(landing, SAMPLE)

        run_id = wait_for_sensor_run(dev, timeout_s=180)
        # The sensor's next tick moves the handled file out of the landing dir.
        archived = wait_for_file(tm2_home / "processed", SAMPLE.name, timeout_s=60)
        day_after = datetime.now(ZoneInfo(TIMEZONE)).date()
        assert archived.parent.name in {day_before.isoformat(), day_after.isoformat()}
        assert archived.read_bytes() == SAMPLE.read_bytes()
        assert not (landing / SAMPLE.name).exists()

        # Every check ran in that run and passed (what the graph's badges summarise).
        statuses = {}
        for node in dev.graphql(CHECK_EXECUTIONS)["assetNodes"]:
            for check in node["assetChecksOrError"]["checks"]:
                execution = check["executionForLatestMaterialization"] or {}
                key = (node["assetKey"]["path"][-1], check["name"])
                statuses[key] = (execution.get("runId"), execution.get("status"))
        expected = {(asset, name) for asset, names in CHECKS_BY_ASSET.items() for name in names}
        assert statuses == dict.fromkeys(expected, (run_id, "SUCCEEDED"))

        screenshots = browse_asset_graph(playwright, dev.url, tmp_path)
    for screenshot in screenshots:
        assert screenshot.stat().st_size > 10_000  # a rendered page, not a blank one


def browse_asset_graph(playwright, url: str, out_dir: Path) -> list[Path]:
    """Open the tm2 group's graph and one asset's checks tab; assert what a user would look for."""
    expect = playwright.expect
    # The page's 60 s, not expect's own 5 s: on a loaded 2-core machine the graph's check badges
    # render after the node names (one CI run missed them by that margin).
    expect.set_options(timeout=60_000)
    graph_png, checks_png = out_dir / "asset_graph.png", out_dir / "validated_checks.png"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{url}/locations/tm2_pipeline/asset-groups/tm2", wait_until="domcontentloaded")
            for asset, checks in CHECKS_BY_ASSET.items():
                expect(page.get_by_text(asset, exact=True).first).to_be_visible()
                # Each node's checks row links to that asset's checks tab: "<n> / <n> Passed".
                badge = page.locator(f'a[href="/assets/{asset}?view=checks"]')
                expect(badge).to_have_text(f"{len(checks)} / {len(checks)} Passed")
            page.screenshot(path=str(graph_png))

            page.goto(f"{url}/assets/validated_tm2_records?view=checks", wait_until="domcontentloaded")
            for name in CHECKS_BY_ASSET["validated_tm2_records"]:
                expect(page.get_by_text(name, exact=True).first).to_be_visible()
            expect(page.get_by_text("Succeeded", exact=True)).to_have_count(3)
            page.screenshot(path=str(checks_png))
        except Exception as error:
            raise DagsterDevError(f"browser check failed at {page.url}: {error}") from error
        finally:
            browser.close()
    return [graph_png, checks_png]
