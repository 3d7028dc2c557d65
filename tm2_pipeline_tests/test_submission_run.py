"""submission_run.py: a file's stored records are read and submitted a batch at a time, in one session."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import httpx
import pytest

from tm2_pipeline import submission_run
from tm2_pipeline.identity import condition_uuid
from tm2_pipeline.openmrs.states import PendingSubmission, SubmissionState, SubmissionSummary
from tm2_pipeline.resources.mongo import MongoResource
from tm2_pipeline.resources.openmrs import SANDBOX_BASE_URL, OpenMRSResource
from tm2_pipeline.settings import SANDBOX_PASSWORD, SANDBOX_USERNAME
from tm2_pipeline.store.records import RecordStore
from tm2_pipeline_tests.openmrs_sample_records import make_record, sample_records, with_changes

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _submit_twice(home: Path, secantus_uri: str, records: list[dict]) -> list[SubmissionSummary]:
    """The records stored in a fresh database, then submitted twice with a fresh sandbox."""
    mongo = MongoResource(uri=secantus_uri, tm2_home=str(home), database_name=f"test_{uuid.uuid4().hex[:12]}")
    openmrs = OpenMRSResource(tm2_home=str(home))
    with mongo.process_config_and_initialize_cm() as store:
        store.records().collection.insert_many([dict(record) for record in records])
        keys = [record["_id"] for record in records] + ["f" * 64]  # one key with no stored record
        first = submission_run.submit_stored_records(keys, mongo=store, openmrs=openmrs, now=NOW)
        second = submission_run.submit_stored_records(keys, mongo=store, openmrs=openmrs, now=NOW)
    return [first, second]


@pytest.mark.integration
def test_records_are_read_a_batch_at_a_time_in_one_session_and_each_submitted_once(
    tmp_path: Path, secantus_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = sample_records()[:30]
    whole, whole_again = _submit_twice(tmp_path / "whole", secantus_uri, records)

    monkeypatch.setattr(submission_run, "SUBMISSION_BATCH_RECORDS", 7)
    asked: list[int] = []
    find_by_keys = RecordStore.find_by_keys

    def counted(store: RecordStore, keys: list[str]) -> list[dict]:
        asked.append(len(keys))
        return find_by_keys(store, keys)

    monkeypatch.setattr(RecordStore, "find_by_keys", counted)
    batched, batched_again = _submit_twice(tmp_path / "batched", secantus_uri, records)
    assert asked == [7, 7, 7, 7, 3] * 2
    assert batched.total == 30 and batched.failed == 0
    assert batched.submitted == batched.state_counts["submitted"] > 0
    assert batched_again.submitted == 0 and batched_again.total == 30
    # The same outcome and the same requests as in one batch: one login, concepts read once.
    assert (batched, batched_again) == (whole, whole_again)


def test_summaries_of_batches_add_up() -> None:
    first, second = SubmissionSummary(), SubmissionSummary()
    first.add(SubmissionState.SUBMITTED)
    first.submitted = 1
    second.add(SubmissionState.SUBMITTED)
    second.add(SubmissionState.FAILED_RETRYABLE)
    second.submitted, second.corrected, second.unchanged = 1, 1, 2
    first.merge(second)
    assert (first.total, first.submitted, first.corrected, first.unchanged, first.failed) == (3, 2, 1, 2, 1)
    assert first.state_counts == {"submitted": 2, "failed_retryable": 1}


class UnreachableOpenMRS(OpenMRSResource):
    """The sandbox's address, but every answer a 503: OpenMRS is down when the run logs in."""

    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.MockTransport(lambda request: httpx.Response(503))


def unreachable(home: Path, base_url: str = SANDBOX_BASE_URL) -> UnreachableOpenMRS:
    return UnreachableOpenMRS(
        tm2_home=str(home),
        base_url=base_url,
        username=SANDBOX_USERNAME,
        password=SANDBOX_PASSWORD,
        allow_insecure=True,
        max_attempts=1,
    )


def fresh_store(home: Path, secantus_uri: str) -> MongoResource:
    return MongoResource(uri=secantus_uri, tm2_home=str(home), database_name=f"test_{uuid.uuid4().hex[:12]}")


@pytest.mark.integration
def test_records_a_failed_login_never_marked_are_left_for_the_nightly_retry(
    tmp_path: Path, secantus_uri: str
) -> None:
    records = sample_records()[:12]
    keys = [record["_id"] for record in records]
    mongo, down = fresh_store(tmp_path, secantus_uri), unreachable(tmp_path)
    with mongo.process_config_and_initialize_cm() as store:
        store.records().collection.insert_many([dict(record) for record in records])
        log = store.submissions()
        log.mark_in_flight(
            [
                PendingSubmission(
                    keys[0], condition_uuid(keys[0]), records[0]["content_hash"], False, new=True
                )
            ],
            down.client_config().server,
            NOW,
        )  # an earlier run's entry: left as it is
        with pytest.raises(dg.Failure) as failed:
            submission_run.submit_stored_records(keys, mongo=store, openmrs=down, now=NOW)
        assert failed.value.allow_retries  # the step's RetryPolicy still retries it
        assert failed.value.description == (
            f"login: server answered 503; {len(keys)} of these records wait for a later run "
            "(the nightly retry)"
        )
        assert failed.value.metadata["not_final"].value == len(keys)
        entries = log.entries_for(keys)
        assert entries[keys[0]].state is SubmissionState.IN_FLIGHT
        unsent = [entries[key] for key in keys[1:]]
        assert {entry.state for entry in unsent} == {SubmissionState.FAILED_RETRYABLE}
        assert [entry.condition_uuid for entry in unsent] == [condition_uuid(key) for key in keys[1:]]
        assert unsent[0].attempts[0].message == "not sent: login: server answered 503"
        assert sorted(log.retryable_keys(NOW, 30)) == sorted(keys)

        # The nightly retry, OpenMRS back: each record created once; nothing left to retry.
        up = OpenMRSResource(tm2_home=str(tmp_path))
        retried = submission_run.submit_stored_records(
            log.retryable_keys(NOW, 30), mongo=store, openmrs=up, now=NOW
        )
        assert retried.total == len(keys) and retried.submitted >= len(keys) - 2
        assert set(retried.state_counts) <= {"submitted", "patient_not_found"}  # the sample has one unknown
        entries = log.entries_for(keys)
        waiting = {key for key, entry in entries.items() if entry.state is SubmissionState.PATIENT_NOT_FOUND}
        assert set(log.retryable_keys(NOW, 30)) == waiting  # still inside its retry window
        again = submission_run.submit_stored_records(keys, mongo=store, openmrs=up, now=NOW)
        assert again.submitted == 0 and again.state_counts == retried.state_counts


@pytest.mark.integration
def test_records_another_openmrs_holds_wait_for_this_one_when_its_login_fails(
    tmp_path: Path, secantus_uri: str
) -> None:
    # From a review: with OPENMRS_BASE_URL changed, a run failing at login counted the records the
    # previous server holds as "in OpenMRS" and left them out of the nightly retry for good.
    records = sample_records()[:12]
    keys = [record["_id"] for record in records]
    production = "https://emr.example.org/openmrs"
    mongo, down = fresh_store(tmp_path, secantus_uri), unreachable(tmp_path, production)
    with mongo.process_config_and_initialize_cm() as store:
        store.records().collection.insert_many([dict(record) for record in records])
        sandbox = OpenMRSResource(tm2_home=str(tmp_path))
        first = submission_run.submit_stored_records(keys, mongo=store, openmrs=sandbox, now=NOW)
        assert first.submitted >= len(keys) - 2
        with pytest.raises(dg.Failure) as failed:
            submission_run.submit_stored_records(keys, mongo=store, openmrs=down, now=NOW)
        assert failed.value.metadata["in_openmrs"].value == 0
        assert failed.value.metadata["not_final"].value == len(keys)
        entries = store.submissions().entries_for(keys)
        assert {entry.server for entry in entries.values()} == {production}
        assert {entry.state for entry in entries.values()} == {SubmissionState.FAILED_RETRYABLE}
        assert [entries[key].condition_uuid for key in keys] == [condition_uuid(key) for key in keys]
        assert all(entry.confirmed_hash is None for entry in entries.values())
        assert sorted(store.submissions().retryable_keys(NOW, 30)) == sorted(keys)


@pytest.mark.integration
def test_records_wait_for_a_later_run_while_another_run_holds_the_sandbox(
    tmp_path: Path, secantus_uri: str
) -> None:
    # From a review: a second `tm2 ingest` at once failed on the sandbox's lock with no outcome
    # logged for its records, so no later run (nor the nightly retry) would ever send them.
    from tm2_pipeline.openmrs.emulator.server import open_sandbox

    records = sample_records()[:5]
    keys = [record["_id"] for record in records]
    mongo = fresh_store(tmp_path, secantus_uri)
    openmrs = OpenMRSResource(tm2_home=str(tmp_path), sandbox_wait_s=0.2)
    with mongo.process_config_and_initialize_cm() as store, open_sandbox(openmrs.sandbox_dir):
        store.records().collection.insert_many([dict(record) for record in records])
        with pytest.raises(dg.Failure) as failed:
            submission_run.submit_stored_records(keys, mongo=store, openmrs=openmrs, now=NOW)
        entries = store.submissions().entries_for(keys)
    assert failed.value.allow_retries  # the step's retry policy tries again
    assert "in use by another process" in failed.value.description
    assert failed.value.metadata["not_final"].value == len(keys)
    assert {entry.state for entry in entries.values()} == {SubmissionState.FAILED_RETRYABLE}


@pytest.mark.integration
def test_a_correction_a_failed_login_never_reached_is_left_for_the_nightly_retry(
    tmp_path: Path, secantus_uri: str
) -> None:
    """A confirmed record whose file brought new content: the nightly retry skips confirmed entries,
    so unless the failed run marks it, the new content waits for the file to come again."""
    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    corrected = with_changes(record, severity="Severe")
    mongo, down = fresh_store(tmp_path, secantus_uri), unreachable(tmp_path)
    up = OpenMRSResource(tm2_home=str(tmp_path))
    with mongo.process_config_and_initialize_cm() as store:
        collection = store.records().collection
        collection.insert_one(dict(record))
        assert submission_run.submit_stored_records(
            [record["_id"]], mongo=store, openmrs=up, now=NOW
        ).submitted
        collection.replace_one({"_id": record["_id"]}, dict(corrected))  # the file's new content

        with pytest.raises(dg.Failure) as failed:
            submission_run.submit_stored_records([record["_id"]], mongo=store, openmrs=down, now=NOW)
        assert failed.value.metadata["not_final"].value == 1
        log = store.submissions()
        assert log.retryable_keys(NOW, 30) == [record["_id"]]

        retried = submission_run.submit_stored_records(
            log.retryable_keys(NOW, 30), mongo=store, openmrs=up, now=NOW
        )
        assert retried.corrected == 1
        entry = log.entries_for([record["_id"]])[record["_id"]]
        assert (entry.state, entry.confirmed_hash) == (SubmissionState.SUBMITTED, corrected["content_hash"])
        assert log.retryable_keys(NOW, 30) == []
