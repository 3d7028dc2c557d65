"""Runs of a killed `tm2 ingest`: found on every name, and which of them the nightly retry leaves alone.

The retry sending what such a run left is exercised end to end, with a real `kill -9`, in
test_cli_interrupt.py."""

from __future__ import annotations

import multiprocessing
import socket
import subprocess
import sys
import uuid

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from tm2_pipeline.abandoned_runs import (
    FINISHED_TAG,
    RUN_PROCESS_TAG,
    end_abandoned_runs,
    is_abandoned,
    mark_finished,
    own_tag,
    run_worker_process,
    runs_to_finish,
    tag_for,
    this_process,
    why_not_send,
)
from tm2_pipeline.partitions import SHA256_TAG


@pytest.fixture(scope="module")
def gone() -> str:
    """Where a process of this host that has ended ran: `<host>:<pid>:<start time>`."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    return f"{socket.gethostname()}:{ended.pid}:1.00"


def started_run(
    instance: dg.DagsterInstance, name: str, where: str | None, sha256: str = "a" * 64, **options
) -> dg.DagsterRun:
    """A run left started; `where` its process (None: this one)."""
    run_id = str(uuid.uuid4())
    process = this_process(run_id) if where is None else tag_for(run_id, where)
    tags = {
        "dagster/partition": name,
        RUN_PROCESS_TAG: process,
        SHA256_TAG: sha256,
        **options.pop("tags", {}),
    }
    return create_run_for_test(
        instance,
        job_name="ingest_tm2_file",
        run_id=run_id,
        tags=tags,
        status=dg.DagsterRunStatus.STARTED,
        **options,
    )


def test_every_file_names_killed_runs_are_ended_and_tagged_and_live_ones_kept(gone):
    with dg.instance_for_test() as instance:
        killed = [started_run(instance, name, gone) for name in ("a.csv", "b.csv")]
        alive = started_run(instance, "c.csv", None)
        elsewhere = started_run(instance, "d.csv", "another-host:1:1.00")
        ended, unfinished = end_abandoned_runs(instance)
        assert {run.run_id for run in ended} == {run.run_id for run in killed}
        assert {run.run_id for run in unfinished} == {alive.run_id, elsewhere.run_id}
        for run in killed:
            after = instance.get_run_by_id(run.run_id)
            assert after.status == dg.DagsterRunStatus.CANCELED and is_abandoned(after)
        assert [run.run_id for run in runs_to_finish(instance)] == [run.run_id for run in killed]
        mark_finished(instance, killed[0], "dealt with")
        assert [run.run_id for run in runs_to_finish(instance)] == [killed[1].run_id]
        assert own_tag(instance.get_run_by_id(killed[0].run_id), FINISHED_TAG) == "dealt with"


def test_tags_copied_to_a_re_execution_do_not_count_as_its_own(gone):
    # Dagster copies a run's tags to its retries and re-executions (from the UI, or run_retries):
    # the copy names the process and fate of the run it re-executes, not its own.
    with dg.instance_for_test() as instance:
        original = started_run(instance, "a.csv", gone)
        end_abandoned_runs(instance)
        mark_finished(instance, original, "dealt with")
        copied = instance.get_run_by_id(original.run_id).tags
        queued = create_run_for_test(
            instance, job_name="ingest_tm2_file", tags=copied, status=dg.DagsterRunStatus.NOT_STARTED
        )
        assert end_abandoned_runs(instance) == ([], [queued])  # not canceled for the original's death
        assert not is_abandoned(instance.get_run_by_id(queued.run_id))
        instance.report_run_canceled(instance.get_run_by_id(queued.run_id))  # by a person
        assert not is_abandoned(instance.get_run_by_id(queued.run_id))
        assert runs_to_finish(instance) == []


def test_a_step_process_of_the_multiprocess_executor_names_its_run_worker():
    assert run_worker_process("run") is None  # not a child started by multiprocessing
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # as Dagster starts step processes
        assert pool.apply(run_worker_process, ("run",)) == this_process("run")


def test_the_nightly_retry_leaves_alone_a_run_killed_before_its_store_step_ended(gone):
    # Stored in part at most, and not checked: the file's next run stores the rest, checks, sends.
    with dg.instance_for_test() as instance:
        started_run(instance, "a.csv", gone)
        [killed] = end_abandoned_runs(instance)[0]
        assert why_not_send(instance, killed) == (
            "its store step did not finish: the file's next run sends its records"
        )


def test_the_nightly_retry_leaves_alone_a_run_that_was_not_to_send(gone):
    stored_only = {
        dg.AssetKey(name) for name in ("raw_tm2_file", "validated_tm2_records", "tm2_mongo_records")
    }
    with dg.instance_for_test() as instance:
        started_run(instance, "a.csv", gone, asset_selection=stored_only)
        [killed] = end_abandoned_runs(instance)[0]
        assert why_not_send(instance, killed) == "OpenMRS was not in the run's selection: nothing to send"


def test_the_nightly_retry_leaves_alone_a_run_any_later_run_of_its_file_name_supersedes(gone):
    # The later landed wins: a corrected export may have dropped rows the killed version stored, and
    # a later run of the same content sends them itself (or leaves them in the log for the retry).
    with dg.instance_for_test() as instance:
        started_run(instance, "a.csv", gone)
        [killed] = end_abandoned_runs(instance)[0]
        create_run_for_test(
            instance,
            job_name="ingest_tm2_file",
            tags={"dagster/partition": "b.csv"},
            status=dg.DagsterRunStatus.SUCCESS,
        )
        assert why_not_send(instance, killed).startswith("its store step did not finish")  # another name
        later = create_run_for_test(
            instance,
            job_name="ingest_tm2_file",
            tags={"dagster/partition": "a.csv", SHA256_TAG: "b" * 64},
            status=dg.DagsterRunStatus.FAILURE,
        )
        assert why_not_send(instance, killed) == (
            f"run {later.run_id} of the same file name came after it, and sends what its file holds"
        )
