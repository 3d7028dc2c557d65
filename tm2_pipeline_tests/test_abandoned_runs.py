"""Runs of a killed `tm2 ingest`: found on every name, and which of them the nightly retry leaves alone.

The retry sending what such a run left is exercised end to end, with a real `kill -9`, in
test_cli_interrupt.py."""

from __future__ import annotations

import socket
import subprocess
import sys

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from tm2_pipeline.abandoned_runs import (
    ABANDONED_TAG,
    FINISHED_TAG,
    INGEST_PROCESS_TAG,
    end_abandoned_ingests,
    mark_finished,
    runs_to_finish,
    this_process,
    why_not_send,
)
from tm2_pipeline.assets.raw import SHA256_TAG


@pytest.fixture(scope="module")
def gone() -> str:
    """The process tag of a process of this host that has ended."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    return f"{socket.gethostname()}:{ended.pid}:1.00"


def started_run(
    instance: dg.DagsterInstance, name: str, process: str, sha256: str = "a" * 64, **options
) -> dg.DagsterRun:
    tags = {"dagster/partition": name, INGEST_PROCESS_TAG: process, SHA256_TAG: sha256}
    return create_run_for_test(
        instance, job_name="ingest_tm2_file", tags=tags, status=dg.DagsterRunStatus.STARTED, **options
    )


def test_every_file_names_killed_runs_are_ended_and_tagged_and_live_ones_kept(gone):
    with dg.instance_for_test() as instance:
        killed = [started_run(instance, name, gone) for name in ("a.csv", "b.csv")]
        alive = started_run(instance, "c.csv", this_process())
        elsewhere = started_run(instance, "d.csv", "another-host:1:1.00")
        ended, unfinished = end_abandoned_ingests(instance)
        assert {run.run_id for run in ended} == {run.run_id for run in killed}
        assert {run.run_id for run in unfinished} == {alive.run_id, elsewhere.run_id}
        for run in killed:
            after = instance.get_run_by_id(run.run_id)
            assert after.status == dg.DagsterRunStatus.CANCELED and after.tags[ABANDONED_TAG] == "true"
        assert [run.run_id for run in runs_to_finish(instance)] == [run.run_id for run in killed]
        mark_finished(instance, killed[0], "dealt with")
        assert [run.run_id for run in runs_to_finish(instance)] == [killed[1].run_id]
        assert instance.get_run_by_id(killed[0].run_id).tags[FINISHED_TAG] == "dealt with"


def test_the_nightly_retry_leaves_alone_a_run_killed_before_its_store_step_ended(gone):
    # Stored in part at most, and not checked: the file's next run stores the rest, checks, sends.
    with dg.instance_for_test() as instance:
        started_run(instance, "a.csv", gone)
        [killed] = end_abandoned_ingests(instance)[0]
        assert why_not_send(instance, killed) == (
            "its store step did not finish: the file's next run sends its records"
        )


def test_the_nightly_retry_leaves_alone_a_run_that_was_not_to_send(gone):
    stored_only = {
        dg.AssetKey(name) for name in ("raw_tm2_file", "validated_tm2_records", "tm2_mongo_records")
    }
    with dg.instance_for_test() as instance:
        started_run(instance, "a.csv", gone, asset_selection=stored_only)
        [killed] = end_abandoned_ingests(instance)[0]
        assert why_not_send(instance, killed) == "OpenMRS was not in the run's selection: nothing to send"


def test_the_nightly_retry_leaves_alone_a_run_a_later_run_of_the_same_content_completed(gone):
    with dg.instance_for_test() as instance:
        started_run(instance, "a.csv", gone)
        [killed] = end_abandoned_ingests(instance)[0]
        tags = {"dagster/partition": "a.csv", SHA256_TAG: "a" * 64}
        # A corrected file, or a run that did not send, did not complete what it left.
        for sha256, selection in (("b" * 64, None), ("a" * 64, {dg.AssetKey("raw_tm2_file")})):
            create_run_for_test(
                instance,
                job_name="ingest_tm2_file",
                tags={**tags, SHA256_TAG: sha256},
                status=dg.DagsterRunStatus.SUCCESS,
                asset_selection=selection,
            )
        assert why_not_send(instance, killed).startswith("its store step did not finish")
        again = create_run_for_test(
            instance, job_name="ingest_tm2_file", tags=tags, status=dg.DagsterRunStatus.SUCCESS
        )
        assert why_not_send(instance, killed) == f"run {again.run_id} of the same file completed it"
