"""Running the emulator: in-process (`open_sandbox`), in a background thread (`SandboxServer`, for tests
and benchmarks) or as a foreground server (`serve_sandbox`, behind `tm2 openmrs-sandbox`).

Always on 127.0.0.1, uvicorn's access log off (patient identifiers travel in query strings).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from tm2_pipeline.openmrs.emulator.app import create_app
from tm2_pipeline.openmrs.emulator.faults import DroppedConnection, FaultConfig, FaultInjector
from tm2_pipeline.openmrs.emulator.persistence import ConditionJournal
from tm2_pipeline.openmrs.emulator.seed import SEED_DIR, load_seed
from tm2_pipeline.openmrs.emulator.state import EmulatorState
from tm2_pipeline.settings import SANDBOX_PASSWORD, SANDBOX_USERNAME

HOST = "127.0.0.1"


@dataclass
class Sandbox:
    state: EmulatorState
    app: ASGIApp
    faults: FaultInjector | None


@contextlib.contextmanager
def open_sandbox(
    state_dir: Path | None = None,
    *,
    username: str = SANDBOX_USERNAME,
    password: str = SANDBOX_PASSWORD,
    faults: FaultConfig | None = None,
    seed_dir: Path = SEED_DIR,
    wait_s: float = 30.0,
) -> Iterator[Sandbox]:
    """The emulator app with its state; conditions persist in `state_dir` (None: in memory only).

    Holds the state directory's lock until the block ends (one process at a time).
    """
    journal = ConditionJournal(state_dir) if state_dir is not None else None
    conditions = journal.open(wait_s=wait_s) if journal is not None else {}
    state = EmulatorState(
        load_seed(seed_dir), users={username: password}, journal=journal, conditions=conditions
    )
    try:
        app = create_app(state)
        injector = FaultInjector(app, faults) if faults is not None else None
        yield Sandbox(state=state, app=injector or app, faults=injector)
    finally:
        state.close()


class _HideInjectedDrops(logging.Filter):
    """uvicorn logs every app exception with a traceback; an injected drop is not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))


def _uvicorn_config(app: ASGIApp, *, log_level: str, port: int = 0, **tls: Any) -> uvicorn.Config:
    logging.getLogger("uvicorn.error").addFilter(_HideInjectedDrops())
    return uvicorn.Config(
        app, host=HOST, port=port, access_log=False, log_level=log_level, lifespan="off", **tls
    )


class SandboxServer:
    """The emulator over real HTTP on 127.0.0.1, served from a background thread.

    `with SandboxServer(sandbox) as server: server.base_url` -> "http://127.0.0.1:<port>/openmrs".
    With `tls=(certificate PEM file, key PEM file)` it is served over https.
    """

    def __init__(self, sandbox: Sandbox, *, port: int = 0, tls: tuple[Path, Path] | None = None) -> None:
        self.sandbox = sandbox
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((HOST, port))
        self.port = self._socket.getsockname()[1]
        self.scheme = "https" if tls else "http"
        files = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls else {}
        self._server = uvicorn.Server(_uvicorn_config(sandbox.app, log_level="warning", **files))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}/openmrs"

    def start(self, timeout_s: float = 10.0) -> SandboxServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the OpenMRS emulator did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_sandbox(
    port: int,
    *,
    fault_rate: float = 0.0,
    latency_ms: float = 0,
    jitter_ms: float = 0,
    username: str = SANDBOX_USERNAME,
    password: str = SANDBOX_PASSWORD,
    state_dir: Path | None = None,
    hang_s: float = 35.0,
) -> None:
    """Serve the emulator on 127.0.0.1:`port` until interrupted (Ctrl-C)."""
    faults = None
    if fault_rate or latency_ms or jitter_ms:
        faults = FaultConfig.spread(fault_rate, latency_ms=latency_ms, jitter_ms=jitter_ms, hang_s=hang_s)
    with open_sandbox(state_dir, username=username, password=password, faults=faults) as sandbox:
        uvicorn.Server(_uvicorn_config(sandbox.app, log_level="info", port=port)).run()
