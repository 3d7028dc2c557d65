"""Dagster's log capture without the Ctrl-C tracebacks of its helpers, for `tm2 ingest` and `tm2 ui`.

On POSIX, Dagster's LocalComputeLogManager.capture_logs mirrors a run's stdout and stderr to the
terminal through two `tail -F` processes, each watched by a Python process that kills its tail if the
run's process dies (dagster/_core/execution/compute_logs.py: execute_posix_tail; scripts/
watch_orphans.py). They are started in the terminal's foreground process group, so Ctrl-C reaches
them too: the tails die (the mirror stops) and each watcher prints a KeyboardInterrupt traceback.

Here the same helpers are started the same way, except that each watcher starts with SIGINT ignored.
That disposition is inherited across exec, and Python then installs no KeyboardInterrupt handler: a
watcher runs on until Dagster terminates it (SIGTERM) as the step ends, as after any run, and still
kills its tail if the process it watches dies. The tails still stop on Ctrl-C, so what the
interrupted steps log after it (their failures, with stack traces) goes to the files, not the terminal.
Same files: the UI shows the captured output as before.

This repo's dagster.yaml names QuietLocalComputeLogManager, so the step processes of the runs that
`tm2 ui` (dagster dev) launches use it too: they share the terminal's process group. Its base dir is
Dagster's default one, `$DAGSTER_HOME/storage`, which YAML cannot spell: the config gives
`dagster_home` (the DAGSTER_HOME variable, as for the storage's `base_dir`) and the class appends
`storage`. A DAGSTER_HOME seeded with an older dagster.yaml still gets it in `tm2 ingest`
(in_process_instance), not in `tm2 ui`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TextIO

import dagster as dg
from dagster import Field, Float, StringSource
from dagster._config.config_schema import UserConfigSchema
from dagster._core.execution.compute_logs import _clean_up_subprocess, _fileno, redirect_to_file
from dagster._core.execution.scripts import watch_orphans
from dagster._core.instance.ref import InstanceRef, compute_logs_directory
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._serdes import ConfigurableClassData
from dagster._utils import ensure_file, touch_file
from dagster_shared.seven import IS_WINDOWS


class QuietLocalComputeLogManager(LocalComputeLogManager):
    """LocalComputeLogManager whose orphan watchers ignore Ctrl-C (SIGINT)."""

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        # The parent's (base_dir, polling_timeout), or dagster_home instead of base_dir.
        return {
            "base_dir": Field(StringSource, is_required=False),
            "dagster_home": Field(StringSource, is_required=False),
            "polling_timeout": Field(Float, is_required=False),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> QuietLocalComputeLogManager:
        config = dict(config_value)
        home = config.pop("dagster_home", None)
        if "base_dir" not in config:
            if home is None:
                raise dg.DagsterInvalidConfigError(
                    f"{cls.__name__} needs base_dir or dagster_home", [], config_value
                )
            config["base_dir"] = compute_logs_directory(home)  # Dagster's default: $DAGSTER_HOME/storage
        return cls(inst_data=inst_data, **config)  # the parent's builds a LocalComputeLogManager

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Iterator[CapturedLogContext]:
        if IS_WINDOWS:  # no tail there: Dagster's own helpers, all started with Ctrl-C ignored
            with ExitStack() as capture:
                with _sigint_ignored():
                    context = capture.enter_context(super().capture_logs(log_key))
                yield context
            return
        # LocalComputeLogManager.capture_logs, with _mirror_to_file for mirror_stream_to_file.
        outpath = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        errpath = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        with _mirror_to_file(sys.stdout, outpath), _mirror_to_file(sys.stderr, errpath):
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))  # Dagster's mark of a finished capture


@contextmanager
def _mirror_to_file(stream: TextIO, path: str) -> Iterator[None]:
    """`stream` written to `path` and mirrored by `tail -F` to where it went, as Dagster's
    mirror_stream_to_file, but with the tail's orphan watcher started with Ctrl-C ignored."""
    ensure_file(path)
    with ExitStack() as helpers:  # closed in reverse: redirect, wait, watcher, tail
        tail = subprocess.Popen(["tail", "-F", "-c", "+0", path], stdout=stream if _fileno(stream) else None)
        helpers.callback(_clean_up_subprocess, tail)
        with _sigint_ignored():
            watcher = subprocess.Popen(
                [sys.executable, watch_orphans.__file__, str(os.getpid()), str(tail.pid)]
            )
        helpers.callback(_clean_up_subprocess, watcher)
        # As Dagster: time for the tail to print the last lines (its default: none).
        helpers.callback(time.sleep, float(os.getenv("DAGSTER_COMPUTE_LOG_TAIL_WAIT_AFTER_FINISH", "0")))
        helpers.enter_context(redirect_to_file(stream, path))
        yield


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored by this process in the block, and so by the processes it starts there.

    A Ctrl-C within the block (one process started, a millisecond or so, twice per capture: per step
    process, or per `tm2 ingest` run) is lost: the run goes on, and the next Ctrl-C stops it.
    """
    previous = signal.getsignal(signal.SIGINT)
    # Only the main thread sets handlers; None: a handler set outside Python, which could not be put back.
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)  # Dagster's (it defers Ctrl-C to its step boundaries)


def in_process_instance(home: Path) -> dg.DagsterInstance:
    """The instance at `home` as its dagster.yaml configures it (DagsterInstance.get()), except that
    Dagster's default compute log manager (a DAGSTER_HOME seeded before this repo's dagster.yaml named
    QuietLocalComputeLogManager) becomes it. Only for runs in the CLI's own process: runs launched from
    the UI or the daemon keep the configured one."""
    ref = InstanceRef.from_dir(str(home))
    logs = ref.compute_logs_data
    if (logs.module_name, logs.class_name) == (LocalComputeLogManager.__module__, "LocalComputeLogManager"):
        quiet = ConfigurableClassData(__name__, QuietLocalComputeLogManager.__name__, logs.config_yaml)
        ref = ref._replace(compute_logs_data=quiet)
    return dg.DagsterInstance.from_ref(ref)
