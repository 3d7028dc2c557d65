"""`tm2 ingest`'s Dagster instance: Ctrl-C stops the run, and Dagster's log-capture helpers stay quiet.

On POSIX, Dagster's LocalComputeLogManager.capture_logs mirrors a run's stdout and stderr to the
terminal through two `tail -F` processes, each watched by a Python process that kills its tail if the
run's process dies (dagster/_core/execution/compute_logs.py: execute_posix_tail; scripts/
watch_orphans.py). They are started in the terminal's foreground process group, so Ctrl-C reaches
them too: the tails die (the mirror stops) and each watcher prints a KeyboardInterrupt traceback.

Here they are started with SIGINT ignored. That disposition is inherited across fork and exec, and
Python then installs no KeyboardInterrupt handler. They run on until Dagster terminates them (SIGTERM)
as the run ends, as after any run, and a watcher still kills its tail if the run's process dies.
Same files, same mirrored output: the UI shows the captured output as before.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.compute_log_manager import CapturedLogContext
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._serdes import ConfigurableClassData


class QuietLocalComputeLogManager(LocalComputeLogManager):
    """LocalComputeLogManager whose helper processes ignore Ctrl-C (SIGINT)."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> QuietLocalComputeLogManager:
        return cls(inst_data=inst_data, **config_value)  # the parent's builds a LocalComputeLogManager

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Iterator[CapturedLogContext]:
        with ExitStack() as capture:
            with _sigint_ignored():  # only while the helpers are started, not while the run runs
                context = capture.enter_context(super().capture_logs(log_key))
            yield context


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored by this process in the block, and so by the processes it starts there.

    A Ctrl-C within the block (two files and four processes started, a few milliseconds once per run)
    is lost: the run goes on, and the next Ctrl-C stops it.
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
    Dagster's default compute log manager becomes QuietLocalComputeLogManager. Only for runs in the
    CLI's own process: runs launched from the UI or the daemon keep the configured one."""
    ref = InstanceRef.from_dir(str(home))
    logs = ref.compute_logs_data
    if (logs.module_name, logs.class_name) == (LocalComputeLogManager.__module__, "LocalComputeLogManager"):
        quiet = ConfigurableClassData(__name__, QuietLocalComputeLogManager.__name__, logs.config_yaml)
        ref = ref._replace(compute_logs_data=quiet)
    return dg.DagsterInstance.from_ref(ref)
