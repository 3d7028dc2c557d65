"""Run `dagster dev` headless for a test, talk to it over GraphQL, and always stop it.

    with DagsterDev(env, log_path=tmp_path / "dagster-dev.log") as dev:
        dev.graphql("{ assetNodes { assetKey { path } } }")

`dagster dev` (or `tm2 ui`, which runs it: `tm2_ui=True`) starts in its own process group
(start_new_session) with SIGINT reset to its default (a child of a non-interactive shell inherits an
ignored SIGINT and would then ignore SIGTERM too). It is stopped with SIGINT to the group (its clean
shutdown, as Ctrl-C in a terminal), then SIGKILL, to the group's leftovers too; any descendant that
left the group is ended by its pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKSPACE_YAML = REPO_ROOT / "workspace.yaml"
REPO_DAGSTER_YAML = REPO_ROOT / "dagster.yaml"

LOCATION_STATUSES = """
{ locationStatusesOrError { __typename
    ... on WorkspaceLocationStatusEntries { entries { name loadStatus } }
    ... on PythonError { message } } }
"""
LOCATION_ERRORS = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } } } }
    ... on PythonError { message } } }
"""


class DagsterDevError(RuntimeError):
    """`dagster dev` did not come up, or GraphQL answered with errors; the message has the log tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def isolated_env(tm2_home: Path, **extra: str) -> dict[str, str]:
    """A process environment for one test: its own TM2_HOME and DAGSTER_HOME (seeded with the repo's
    dagster.yaml), and no endpoint or secret inherited from the developer's shell."""
    dagster_home = tm2_home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        shutil.copyfile(REPO_DAGSTER_YAML, dagster_home / "dagster.yaml")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TM2_", "MONGODB_", "OPENMRS_", "DAGSTER_"))
    }
    env.update(TM2_HOME=str(tm2_home), DAGSTER_HOME=str(dagster_home), PYTHONUNBUFFERED="1", **extra)
    return env


class DagsterDev:
    """One `dagster dev -w WORKSPACE -h 127.0.0.1 -p PORT` process group, as a context manager."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        log_path: Path,
        workspace: Path = WORKSPACE_YAML,
        port: int | None = None,
        cwd: Path | None = None,
        load_timeout_s: float = 120.0,
        tm2_ui: bool = False,
    ) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.workspace = workspace
        self.port = port or free_port()
        # Not the repo: a developer's `.env` there must not leak into the test.
        self.cwd = cwd or log_path.parent
        self.load_timeout_s = load_timeout_s
        self.tm2_ui = tm2_ui
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._client = httpx.Client(base_url=self.url, timeout=30.0)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> DagsterDev:
        command = [sys.executable, "-m", "dagster", "dev", "-w", str(self.workspace),
                   "-h", "127.0.0.1", "-p", str(self.port)]  # fmt: skip
        if self.tm2_ui:  # the repo's workspace.yaml
            command = [sys.executable, "-m", "tm2_pipeline.cli", "ui", "--port", str(self.port)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_default_sigint,
            )  # fmt: skip
        try:
            self._wait_until_loaded()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_loaded(self) -> None:
        deadline = time.monotonic() + self.load_timeout_s
        while not self._answers("/server_info"):
            self._check_alive()
            if time.monotonic() > deadline:
                raise DagsterDevError(f"no /server_info after {self.load_timeout_s:.0f} s\n{self.log_tail()}")
            time.sleep(0.5)
        while True:
            self._check_alive()
            statuses = self.location_statuses()
            if statuses and all(status == "LOADED" for status in statuses.values()):
                return
            if time.monotonic() > deadline:
                raise DagsterDevError(f"locations not LOADED: {statuses}\n{self.log_tail()}")
            time.sleep(0.5)

    def _answers(self, path: str) -> bool:
        try:
            return self._client.get(path, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise DagsterDevError(f"dagster dev exited with {self.process.returncode}\n{self.log_tail()}")

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGINT to the group (clean shutdown), SIGKILL after `timeout_s`; leftovers by pid."""
        process, self.process = self.process, None
        self._client.close()
        if process is None:
            return
        descendants = _descendants(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        # Children that were still shutting down, or that started their own session.
        _gone, alive = psutil.wait_procs(descendants, timeout=5)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
        with contextlib.suppress(ProcessLookupError):  # members started after `descendants` was taken
            os.killpg(process.pid, signal.SIGKILL)

    def __enter__(self) -> DagsterDev:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- talking to it -----------------------------------------------------------------------

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The `data` of a GraphQL answer; errors raise `DagsterDevError`."""
        response = self._client.post("/graphql", json={"query": query, "variables": dict(variables or {})})
        if response.status_code != 200:
            raise DagsterDevError(f"/graphql answered {response.status_code}: {response.text[:2000]}")
        body = response.json()
        if body.get("errors"):
            raise DagsterDevError(f"/graphql errors: {body['errors']}")
        return body["data"]

    def location_statuses(self) -> dict[str, str]:
        try:
            data = self.graphql(LOCATION_STATUSES)["locationStatusesOrError"]
        except (httpx.HTTPError, DagsterDevError):
            return {}
        return {entry["name"]: entry["loadStatus"] for entry in data.get("entries", [])}

    def location_errors(self) -> dict[str, str]:
        """Locations that finished loading with an error (e.g. an import error in the definitions)."""
        data = self.graphql(LOCATION_ERRORS)["workspaceOrError"]
        errors = {}
        for entry in data.get("locationEntries", []):
            outcome = entry.get("locationOrLoadError") or {}
            if outcome.get("__typename") == "PythonError":
                errors[entry["name"]] = outcome["message"]
        return errors

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "--- dagster dev log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])


def _default_sigint() -> None:
    """In the child, before exec: a SIGINT ignored by our parent (pytest started with `&` from a
    script) would be inherited, and `dagster dev` would then ignore our SIGINT, and SIGTERM too."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
