"""The sandbox's conditions on disk: a snapshot plus an append-only journal, under an exclusive lock.

Every accepted write is one journal line, flushed before the answer leaves, so a killed process loses
nothing it acknowledged. Opening replays the journal and compacts it into the snapshot. One process
at a time owns a state directory (flock); a second one waits, then fails with a clear message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import IO, Any

SNAPSHOT = "conditions.json"
JOURNAL = "conditions.journal.jsonl"
LOCK = "sandbox.lock"


class SandboxBusyError(RuntimeError):
    """Another process holds this sandbox state directory."""


class ConditionJournal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock_handle: IO[str] | None = None
        self._journal: IO[str] | None = None

    def open(self, *, wait_s: float = 30.0) -> dict[str, dict[str, Any]]:
        """Take the lock and return every stored condition by uuid."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_handle = (self.directory / LOCK).open("a+", encoding="utf-8")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(self._lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._lock_handle.close()
                    self._lock_handle = None
                    raise SandboxBusyError(
                        f"the OpenMRS sandbox state in {self.directory} is in use by another process "
                        "(a running `tm2 openmrs-sandbox` or another run); try again when it has finished"
                    ) from None
                time.sleep(0.1)
        conditions = self._load()
        self._compact(conditions)
        self._journal = (self.directory / JOURNAL).open("a", encoding="utf-8")
        return conditions

    def _load(self) -> dict[str, dict[str, Any]]:
        conditions: dict[str, dict[str, Any]] = {}
        snapshot = self.directory / SNAPSHOT
        if snapshot.exists():
            for item in json.loads(snapshot.read_text(encoding="utf-8")):
                conditions[item["uuid"]] = item
        journal = self.directory / JOURNAL
        if journal.exists():
            for line in journal.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):  # a line cut short by a crash: never acknowledged
                    item = json.loads(line)
                    conditions[item["uuid"]] = item
        return conditions

    def _compact(self, conditions: dict[str, dict[str, Any]]) -> None:
        temporary = self.directory / (SNAPSHOT + ".tmp")
        temporary.write_text(json.dumps(list(conditions.values()), ensure_ascii=False), encoding="utf-8")
        os.replace(temporary, self.directory / SNAPSHOT)
        (self.directory / JOURNAL).write_text("", encoding="utf-8")

    def append(self, condition: dict[str, Any]) -> None:
        if self._journal is None:
            raise RuntimeError("the sandbox state is not open")
        self._journal.write(json.dumps(condition, ensure_ascii=False) + "\n")
        self._journal.flush()

    def close(self, conditions: dict[str, dict[str, Any]]) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
            self._compact(conditions)
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None
