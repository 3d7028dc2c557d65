"""Emulator fault injection (real HTTP) and its on-disk state (journal, crash, lock)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tm2_pipeline.openmrs.emulator.faults import KINDS, FaultConfig
from tm2_pipeline.openmrs.emulator.server import SandboxServer, open_sandbox

pytestmark = pytest.mark.integration

ADMIN = ("admin", "Admin123")


def only(kind: str, **options) -> FaultConfig:
    return FaultConfig(rates={kind: 1.0}, **options)


def post_condition(server: SandboxServer, condition_uuid: str, timeout: float = 5.0) -> httpx.Response:
    patient = server.sandbox.state.find_patients("MRN-01001")[0]["uuid"]
    body = {
        "uuid": condition_uuid,
        "patient": patient,
        "condition": {"nonCoded": "x"},
        "clinicalStatus": "ACTIVE",
    }
    return httpx.post(f"{server.base_url}/ws/rest/v1/condition", json=body, auth=ADMIN, timeout=timeout)


@pytest.mark.parametrize(
    ("kind", "status", "html"),
    [
        ("error_500", 500, False),
        ("bad_gateway", 502, True),
        ("unavailable", 503, True),
        ("gateway_timeout", 504, True),
    ],
)
def test_error_faults_answer_like_openmrs_or_its_gateway(kind: str, status: int, html: bool) -> None:
    with open_sandbox(None, faults=only(kind)) as sandbox, SandboxServer(sandbox) as server:
        answer = httpx.get(server.base_url + "/ws/rest/v1/session", auth=ADMIN)
        assert answer.status_code == status
        assert answer.headers["content-type"].startswith("text/html" if html else "application/json")
        if kind == "unavailable":
            assert answer.headers["Retry-After"] == "1"
        assert sandbox.faults is not None and sandbox.faults.injected[kind] == 1
        assert sandbox.state.login_attempts["admin"] == 0  # nothing reached OpenMRS


def test_drop_cuts_the_connection() -> None:
    with open_sandbox(None, faults=only("drop")) as sandbox, SandboxServer(sandbox) as server:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(server.base_url + "/ws/rest/v1/session", auth=ADMIN)
        assert sandbox.state.login_attempts["admin"] == 0


def test_lost_response_writes_but_the_client_never_hears() -> None:
    with (
        open_sandbox(None, faults=only("lost_response", seed=3)) as sandbox,
        SandboxServer(sandbox) as server,
    ):
        outcomes = set()
        for _ in range(6):  # both endings (504 page, cut connection) show up with this seed
            condition = str(uuid.uuid4())
            try:
                outcomes.add(post_condition(server, condition).status_code)
            except httpx.RemoteProtocolError:
                outcomes.add("dropped")
            assert condition in sandbox.state.conditions
        assert outcomes == {504, "dropped"}


def test_timeout_hangs_past_the_client_and_writes_late() -> None:
    faults = FaultConfig(rates={"timeout": 1.0}, hang_s=0.6)
    with open_sandbox(None, faults=faults) as sandbox, SandboxServer(sandbox) as server:
        condition = str(uuid.uuid4())
        with pytest.raises(httpx.ReadTimeout):
            post_condition(server, condition, timeout=0.2)
        assert condition not in sandbox.state.conditions
        deadline = time.monotonic() + 5
        while condition not in sandbox.state.conditions and time.monotonic() < deadline:
            time.sleep(0.05)
        assert condition in sandbox.state.conditions


def test_latency_is_added() -> None:
    with open_sandbox(None, faults=FaultConfig(latency_ms=150)) as sandbox, SandboxServer(sandbox) as server:
        started = time.monotonic()
        httpx.get(server.base_url + "/ws/rest/v1/session", auth=ADMIN)
        assert time.monotonic() - started >= 0.15


def test_fault_config_is_validated_and_spread() -> None:
    spread = FaultConfig.spread(0.35)
    assert set(spread.rates) == set(KINDS) and sum(spread.rates.values()) == pytest.approx(0.35)
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultConfig(rates={"gremlins": 0.1})
    with pytest.raises(ValueError, match="must not add up"):
        FaultConfig(rates={"drop": 0.7, "timeout": 0.7})


# --- state on disk -----------------------------------------------------------------------------

CRASH_SCRIPT = """
import os, sys
from pathlib import Path
from tm2_pipeline.openmrs.emulator.server import open_sandbox
with open_sandbox(Path(sys.argv[1])) as sandbox:
    patient = next(iter(sandbox.state.patients))
    sandbox.state.create_condition({"uuid": sys.argv[2], "patient": patient, "nonCoded": "x",
                                    "clinicalStatus": "ACTIVE"})
    os._exit(9)  # killed: no close, no compaction
"""


def test_conditions_survive_a_killed_process_and_a_clean_close(tmp_path: Path) -> None:
    crashed = str(uuid.uuid4())
    result = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(tmp_path), crashed], timeout=60)
    assert result.returncode == 9
    with open_sandbox(tmp_path) as sandbox:
        assert crashed in sandbox.state.conditions
        patient = next(iter(sandbox.state.patients))
        sandbox.state.create_condition({"uuid": "second", "patient": patient, "nonCoded": "y"})
    with open_sandbox(tmp_path) as sandbox:
        assert {crashed, "second"} <= set(sandbox.state.conditions)


def test_one_process_at_a_time_per_state_directory(tmp_path: Path) -> None:
    with open_sandbox(tmp_path):
        holder = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path\n"
                "from tm2_pipeline.openmrs.emulator.server import open_sandbox\n"
                "from tm2_pipeline.openmrs.emulator.persistence import SandboxBusyError\n"
                "try:\n    open_sandbox(Path(sys.argv[1]), wait_s=0.2).__enter__()\n"
                "except SandboxBusyError as e:\n    print(e); sys.exit(3)\n",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert holder.returncode == 3 and "in use by another process" in holder.stdout
    with open_sandbox(tmp_path, wait_s=0.2):
        pass  # released: free again
