"""Runs whose process died: found on every name, told from copies and from a person's cancel, and which
of them the nightly retry leaves alone.

The retry sending what such a run left is exercised end to end, with a real `kill -9`, in
test_cli_interrupt.py."""

from __future__ import annotations

import multiprocessing
import os
import uuid

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from dagster._core.test_utils import create_run_for_test

from tm2_pipeline.abandoned_runs import (
    FINISHED_TAG,
    RUN_PROCESS_TAG,
    end_abandoned_runs,
    is_abandoned,
    later_run_under_way,
    mark_finished,
    own_tag,
    runs_to_finish,
    tag_for,
    tag_run_worker,
    this_process,
    why_not_send,
)
from tm2_pipeline.partitions import SHA256_TAG, tm2_csv_files
from tm2_pipeline_tests.process_groups import ended_process_identity


@pytest.fixture(scope="module")
def gone() -> str:
    return ended_process_identity()


def started_run(
    instance: dg.DagsterInstance, name: str, where: str | None, sha256: str = "a" * 64, **options
) -> dg.DagsterRun:
    """A run left started; `where` its process (None: this one)."""
    run_id = str(uuid.uuid4())
    process = this_process(run_id) if where is None else tag_for(run_id, where)
    tags = {"dagster/partition": name, RUN_PROCESS_TAG: process, SHA256_TAG: sha256}
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
        elsewhere = started_run(instance, "d.csv", "another-host:-:-:1:1")
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


def test_a_killed_tm2_retry_is_ended_too_and_left_out_of_the_files_to_finish(gone):
    # From a review: untagged, a killed `tm2 retry` stayed "started" for ever, in the run queue's count.
    with dg.instance_for_test() as instance:
        run_id = str(uuid.uuid4())
        retry = create_run_for_test(
            instance,
            job_name="openmrs_retry",
            run_id=run_id,
            tags={RUN_PROCESS_TAG: tag_for(run_id, gone)},
            status=dg.DagsterRunStatus.STARTED,
        )
        ended, _ = end_abandoned_runs(instance)
        assert [run.run_id for run in ended] == [retry.run_id]
        assert runs_to_finish(instance) == []  # no file's records to send


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


def tag_in_a_step(instance_ref: InstanceRef, run_id: str) -> int:
    """What each asset step does first, in a process spawned as Dagster's executor spawns steps
    (or as the code server spawns a run worker); the process's pid."""
    with dg.DagsterInstance.from_ref(instance_ref) as instance:
        tag_run_worker(instance, instance.get_run_by_id(run_id))
    return os.getpid()


def test_each_step_of_a_daemon_run_names_its_run_worker_over_copied_tags(gone):
    # A retry from failure starts at a later step, with its parent's tags: among them a
    # re-executed `tm2 ingest` run's "no time limit", which would keep it from the run monitor.
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 2}}) as instance:
        parent = started_run(instance, "a.csv", gone)
        copied = {**parent.tags, "dagster/max_runtime": "0", "dagster/max_retries": "0"}
        retry = create_run_for_test(
            instance, job_name="ingest_tm2_file", tags=copied, status=dg.DagsterRunStatus.STARTED
        )
        tag_run_worker(instance, retry)  # in this process (a run in process): nothing to name
        assert instance.get_run_by_id(retry.run_id).tags == copied
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            pool.apply(tag_in_a_step, (instance.get_ref(), retry.run_id))
        tagged = instance.get_run_by_id(retry.run_id)
        assert tag_for(retry.run_id, own_tag(tagged, RUN_PROCESS_TAG)) == this_process(retry.run_id)
        assert tagged.tags["dagster/max_runtime"] == ""  # the instance's limit again
        assert tagged.tags["dagster/max_retries"] == "2"  # and its run retries
        assert [run.run_id for run in end_abandoned_runs(instance)[0]] == [parent.run_id]  # not the retry


def test_with_the_in_process_executor_a_step_names_its_own_process_the_run_worker(gone):
    # Its parent is then the code server, which may die while the run goes on, or outlive it.
    with dg.instance_for_test() as instance:
        run = create_run_for_test(
            instance,
            job_name="ingest_tm2_file",
            run_config={"execution": {"config": {"in_process": {}}}},
            status=dg.DagsterRunStatus.STARTED,
        )
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            worker_pid = pool.apply(tag_in_a_step, (instance.get_ref(), run.run_id))
        named = own_tag(instance.get_run_by_id(run.run_id), RUN_PROCESS_TAG)
    assert named is not None and named.rsplit(":", 4)[3] == str(worker_pid) != str(os.getpid())


def test_a_run_a_person_asked_to_stop_is_canceled_not_abandoned(gone):
    # The UI's Terminate marks the run canceling; with its process gone, nothing finishes that.
    with dg.instance_for_test() as instance:
        run = started_run(instance, "a.csv", gone)
        instance.report_run_canceling(run)
        assert end_abandoned_runs(instance) == ([], [])
        after = instance.get_run_by_id(run.run_id)
        assert after.status == dg.DagsterRunStatus.CANCELED and not is_abandoned(after)


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


@dg.asset(name="tm2_mongo_records", partitions_def=tm2_csv_files)
def stand_in_store() -> None:
    """Stands in for the store step: its step succeeding is what the nightly retry looks at."""


@dg.asset(name="openmrs_submissions", partitions_def=tm2_csv_files, deps=[stand_in_store])
def stand_in_submission() -> None:
    pass


def test_the_nightly_retry_leaves_alone_a_run_a_later_run_of_its_file_name_supersedes(gone):
    # The later landed wins: a corrected export may have dropped rows the killed version stored, and
    # a later run of the same content sends them itself (or leaves them in the log for the retry).
    # A later run still under way may yet stop before its store: the run waits for another night.
    with dg.instance_for_test() as instance:
        started_run(instance, "a.csv", gone)
        [killed] = end_abandoned_runs(instance)[0]

        def later_run(name: str, status: dg.DagsterRunStatus, **options) -> dg.DagsterRun:
            tags = {"dagster/partition": name, SHA256_TAG: "b" * 64}
            return create_run_for_test(
                instance, job_name="ingest_tm2_file", tags=tags, status=status, **options
            )

        later_run("b.csv", dg.DagsterRunStatus.STARTED)  # another file name
        later_run("a.csv", dg.DagsterRunStatus.FAILURE)  # e.g. MongoDB down: stored nothing
        later_run("a.csv", dg.DagsterRunStatus.STARTED, asset_selection={dg.AssetKey("raw_tm2_file")})
        assert later_run_under_way(instance, killed) is None
        assert why_not_send(instance, killed).startswith("its store step did not finish")
        under_way = later_run("a.csv", dg.DagsterRunStatus.STARTED)
        assert later_run_under_way(instance, killed) == under_way.run_id
        assert why_not_send(instance, killed).startswith("its store step did not finish")
        instance.report_run_canceled(under_way)  # before its store: it superseded nothing
        assert later_run_under_way(instance, killed) is None
        instance.add_dynamic_partitions(tm2_csv_files.name, ["a.csv"])
        stored = dg.materialize(
            [stand_in_store, stand_in_submission], instance=instance, partition_key="a.csv"
        )
        assert why_not_send(instance, killed) == (
            f"run {stored.run_id} of the same file name came after it and sent what its file holds"
        )
