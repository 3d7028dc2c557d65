"""The submission log on the real wire-protocol server (SecantusDB): write-ahead, outcomes, counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pymongo.database import Database

from tm2_pipeline.identity import condition_uuid
from tm2_pipeline.openmrs.states import Attempt, PendingSubmission, SubmissionOutcome, SubmissionState
from tm2_pipeline.store import submissions
from tm2_pipeline.store.submissions import KEEP_ATTEMPTS, SubmissionLog

pytestmark = pytest.mark.integration

NOW = datetime(2025, 6, 1, 12, 0, 0, 123000, tzinfo=UTC)
SERVER = "https://emr.example.org/openmrs"


def attempt(n: int, status: int = 201) -> Attempt:
    return Attempt(at=NOW + timedelta(seconds=n), method="POST", status=status, message=f"try {n}")


def log_in_states(
    log: SubmissionLog,
    states: dict[str, SubmissionState],
    *,
    marked_at: dict[str, datetime],
    outcome_at: datetime = NOW,
    attempts: tuple[Attempt, ...] = (),
) -> None:
    """One entry per key, marked at `marked_at[key]` (NOW if absent), then given its state."""
    for key, state in states.items():
        log.mark_in_flight(
            [PendingSubmission(key, f"u-{key}", "h", fresh=False)], SERVER, marked_at.get(key, NOW)
        )
        if state is not SubmissionState.IN_FLIGHT:
            log.record_outcomes([SubmissionOutcome(key, state, f"u-{key}", attempts)], outcome_at)


def test_mark_in_flight_then_outcome_round_trip(mongo_db: Database) -> None:
    log = SubmissionLog(mongo_db)
    log.mark_in_flight(
        [PendingSubmission("k1", "u1", "h1", fresh=False), PendingSubmission("k2", "u2", "h2", fresh=False)],
        SERVER,
        NOW,
    )
    entries = log.entries_for(["k1", "k2", "missing"])
    assert set(entries) == {"k1", "k2"}
    first = entries["k1"]
    assert (first.state, first.condition_uuid, first.content_hash, first.confirmed_hash, first.server) == (
        SubmissionState.IN_FLIGHT,
        "u1",
        "h1",
        None,
        SERVER,
    )
    assert first.first_attempt_at.replace(tzinfo=UTC) == NOW

    later = NOW + timedelta(hours=1)
    log.record_outcomes(
        [
            SubmissionOutcome("k1", SubmissionState.SUBMITTED, "u1", (attempt(1),), confirmed_hash="h1"),
            SubmissionOutcome("k2", SubmissionState.FAILED_RETRYABLE, "u2", (attempt(1, 502),)),
        ],
        later,
    )
    entries = log.entries_for(["k1", "k2"])
    assert entries["k1"].state is SubmissionState.SUBMITTED and entries["k1"].confirmed_hash == "h1"
    assert entries["k1"].updated_at.replace(tzinfo=UTC) == later
    assert entries["k2"].confirmed_hash is None
    assert [a.status for a in entries["k2"].attempts] == [502]


def test_a_new_key_is_inserted_as_the_upsert_would_write_it_and_a_raced_one_is_upserted(
    mongo_db: Database,
) -> None:
    log = SubmissionLog(mongo_db)
    log.mark_in_flight([PendingSubmission("upserted", "u", "h", fresh=False)], SERVER, NOW)
    log.mark_in_flight([PendingSubmission("inserted", "u", "h", fresh=False, new=True)], SERVER, NOW)
    collection = mongo_db["openmrs_submissions"]
    upserted, inserted = (collection.find_one({"_id": key}, {"_id": 0}) for key in ("upserted", "inserted"))
    assert inserted == upserted

    # Another run logged "raced" (and confirmed it) after our read: our insert collides, so it is
    # upserted instead, keeping what the other run wrote first.
    log.record_outcomes(
        [SubmissionOutcome("inserted", SubmissionState.SUBMITTED, "u", (), confirmed_hash="h")], NOW
    )
    later = NOW + timedelta(hours=1)
    log.mark_in_flight(
        [
            PendingSubmission("inserted", "u", "h2", fresh=False, new=True),
            PendingSubmission("fresh", "u3", "h3", fresh=False, new=True),
        ],
        SERVER,
        later,
    )
    entries = log.entries_for(["inserted", "fresh"])
    raced = entries["inserted"]
    assert (raced.state, raced.content_hash, raced.confirmed_hash) == (SubmissionState.IN_FLIGHT, "h2", "h")
    assert raced.first_attempt_at.replace(tzinfo=UTC) == NOW
    assert entries["fresh"].state is SubmissionState.IN_FLIGHT
    assert entries["fresh"].first_attempt_at.replace(tzinfo=UTC) == later


def test_a_second_mark_keeps_first_attempt_and_confirmed_hash(mongo_db: Database) -> None:
    log = SubmissionLog(mongo_db)
    log.mark_in_flight([PendingSubmission("k", "u1", "h1", fresh=False)], SERVER, NOW)
    log.record_outcome(
        "k", SubmissionState.SUBMITTED, [attempt(1)], condition_uuid="u1", now=NOW, confirmed_hash="h1"
    )
    log.mark_in_flight([PendingSubmission("k", "u1", "h2", fresh=False)], SERVER, NOW + timedelta(days=2))
    entry = log.entries_for(["k"])["k"]
    assert (entry.state, entry.content_hash, entry.confirmed_hash) == (SubmissionState.IN_FLIGHT, "h2", "h1")
    assert entry.first_attempt_at.replace(tzinfo=UTC) == NOW
    assert len(entry.attempts) == 1


def test_a_fresh_mark_forgets_another_servers_history(mongo_db: Database) -> None:
    log = SubmissionLog(mongo_db)
    log.mark_in_flight([PendingSubmission("k", "u1", "h1", fresh=False)], "http://old/openmrs", NOW)
    log.record_outcome(
        "k", SubmissionState.SUBMITTED, [attempt(1)], condition_uuid="u9", now=NOW, confirmed_hash="h1"
    )
    log.mark_in_flight([PendingSubmission("k", "u1", "h1", fresh=True)], SERVER, NOW + timedelta(days=1))
    entry = log.entries_for(["k"])["k"]
    assert (entry.server, entry.condition_uuid, entry.confirmed_hash, entry.attempts) == (
        SERVER,
        "u1",
        None,
        (),
    )
    assert entry.first_attempt_at.replace(tzinfo=UTC) == NOW + timedelta(days=1)


def test_attempts_keep_only_the_last_twenty(mongo_db: Database) -> None:
    log = SubmissionLog(mongo_db)
    log.mark_in_flight([PendingSubmission("k", "u", "h", fresh=False)], SERVER, NOW)
    for batch in range(3):
        attempts = tuple(attempt(batch * 10 + n, 500 + n) for n in range(10))
        log.record_outcomes([SubmissionOutcome("k", SubmissionState.FAILED_RETRYABLE, "u", attempts)], NOW)
    kept = log.entries_for(["k"])["k"].attempts
    assert len(kept) == KEEP_ATTEMPTS
    assert [a.message for a in kept] == [f"try {n}" for n in range(10, 30)]


def test_rebase_moves_the_current_uuid(mongo_db: Database) -> None:
    log = SubmissionLog(mongo_db)
    log.mark_in_flight([PendingSubmission("k", "u1", "h2", fresh=False)], SERVER, NOW)
    log.rebase("k", "u2", NOW)
    entry = log.entries_for(["k"])["k"]
    assert (entry.condition_uuid, entry.state) == ("u2", SubmissionState.IN_FLIGHT)


def test_state_counts_and_retryable_keys(mongo_db: Database) -> None:
    log = SubmissionLog(mongo_db)
    old = NOW - timedelta(days=40)
    states = {
        "a": SubmissionState.SUBMITTED,
        "b": SubmissionState.FAILED_RETRYABLE,
        "c": SubmissionState.PATIENT_NOT_FOUND,
        "d": SubmissionState.PATIENT_NOT_FOUND,
        "e": SubmissionState.REJECTED_BY_SERVER,
        "f": SubmissionState.IN_FLIGHT,
    }
    log_in_states(log, states, marked_at={"d": old})
    assert log.state_counts() == {
        "submitted": 1,
        "failed_retryable": 1,
        "patient_not_found": 2,
        "rejected_by_server": 1,
        "in_flight": 1,
    }
    assert log.state_counts(["a", "c", "zzz"]) == {"submitted": 1, "patient_not_found": 1}
    assert log.retryable_keys(NOW, patient_retry_days=30) == ["b", "c", "f"]
    assert log.retryable_keys(NOW, patient_retry_days=60) == ["b", "c", "d", "f"]


def test_a_person_releases_the_records_waiting_for_them_and_nothing_else(mongo_db: Database) -> None:
    log = SubmissionLog(mongo_db)
    old = NOW - timedelta(days=40)
    states = {
        "sent": SubmissionState.SUBMITTED,
        "ambiguous": SubmissionState.AMBIGUOUS_PATIENT,
        "refused": SubmissionState.REJECTED_BY_SERVER,
        "expired": SubmissionState.PATIENT_NOT_FOUND,
        "sending": SubmissionState.IN_FLIGHT,
    }
    log_in_states(
        log, states, marked_at=dict.fromkeys(states, old), outcome_at=old, attempts=(attempt(1, 400),)
    )
    assert log.retryable_keys(NOW, patient_retry_days=30) == ["sending"]
    assert [
        e.key for e in log.entries_in([SubmissionState.REJECTED_BY_SERVER, SubmissionState.AMBIGUOUS_PATIENT])
    ] == [
        "ambiguous",
        "refused",
    ]

    released = log.release(
        [
            SubmissionState.AMBIGUOUS_PATIENT,
            SubmissionState.REJECTED_BY_SERVER,
            SubmissionState.PATIENT_NOT_FOUND,
        ],
        "released by a person",
        NOW,
    )
    assert released == 3
    assert log.retryable_keys(NOW, patient_retry_days=30) == ["ambiguous", "expired", "refused", "sending"]
    entries = log.entries_for(list(states))
    assert {key: entry.state.value for key, entry in entries.items()} == {
        "sent": "submitted",
        "ambiguous": "failed_retryable",
        "refused": "failed_retryable",
        "expired": "failed_retryable",
        "sending": "in_flight",
    }
    expired = entries["expired"]
    # A new patient window, the earlier attempts kept, the release noted after them.
    assert expired.first_attempt_at.replace(tzinfo=UTC) == NOW
    assert [(a.status, a.message) for a in expired.attempts] == [
        (400, "try 1"),
        (None, "released by a person"),
    ]
    assert entries["sent"].updated_at.replace(tzinfo=UTC) == old
    assert log.release([SubmissionState.AMBIGUOUS_PATIENT], "again", NOW) == 0


def test_unsent_entries_of_another_server_start_afresh_unless_a_run_is_sending_them(
    mongo_db: Database,
) -> None:
    log = SubmissionLog(mongo_db)
    other = "http://127.0.0.1:8080/openmrs"
    for key in ("sent", "sending"):
        log.mark_in_flight([PendingSubmission(key, f"u-{key}", "h", fresh=False)], other, NOW)
    log.record_outcomes(
        [SubmissionOutcome("sent", SubmissionState.SUBMITTED, "u-sent2", (), confirmed_hash="h")], NOW
    )
    later = NOW + timedelta(hours=1)
    assert log.mark_unsent(["sent", "sending"], SERVER, "not sent: login", later) == 1
    entries = log.entries_for(["sent", "sending"])
    sent = entries["sent"]
    assert (sent.state, sent.server, sent.condition_uuid, sent.confirmed_hash, sent.content_hash) == (
        SubmissionState.FAILED_RETRYABLE,
        SERVER,
        condition_uuid("sent"),
        None,
        None,
    )
    assert [a.message for a in sent.attempts] == ["not sent: login"]
    assert (entries["sending"].state, entries["sending"].server) == (SubmissionState.IN_FLIGHT, other)
    # Settled, but claimed by a run whose lease has not run out (it may be sending): left to it.
    mongo_db["openmrs_submissions"].update_one(
        {"_id": "sending"}, {"$set": {"state": "submitted", "busy_since": datetime.now(UTC)}}
    )
    assert log.mark_unsent(["sending"], SERVER, "not sent: login", later) == 0
    assert log.entries_for(["sending"])["sending"].server == other


def test_entries_for_reads_in_chunks(mongo_db: Database) -> None:
    log = SubmissionLog(mongo_db)
    keys = [f"k{n:05d}" for n in range(1001)]
    log.mark_in_flight([PendingSubmission(k, "u", "h", fresh=False) for k in keys], SERVER, NOW)
    assert len(log.entries_for(keys)) == 1001


def _confirmed(log: SubmissionLog, key: str) -> None:
    log.mark_in_flight([PendingSubmission(key, "v1", "h1", fresh=False)], SERVER, NOW)
    log.record_outcome(key, SubmissionState.SUBMITTED, [], condition_uuid="v1", now=NOW, confirmed_hash="h1")


def _correction(log: SubmissionLog, key: str) -> PendingSubmission:
    claim = log.entries_for([key])[key].claim  # what the run read when it planned the batch
    return PendingSubmission(key, "v1", "h2", fresh=False, claimed=True, claim=claim)


def test_a_correction_is_marked_by_one_run_only(mongo_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = SubmissionLog(mongo_db), SubmissionLog(mongo_db)
    _confirmed(first, "k")
    planned_by_first, planned_by_second = _correction(first, "k"), _correction(second, "k")
    assert first.mark_in_flight([planned_by_first], SERVER, NOW) == {"k"}
    # Planned from the same read: the claim moved since, so the second run does not send it.
    assert second.mark_in_flight([planned_by_second], SERVER, NOW) == set()
    # Planned after the first run's mark: in flight under a live claim, still not the second's.
    assert second.mark_in_flight([_correction(second, "k")], SERVER, NOW) == set()
    # The first run itself may mark it again (a step retried inside the same run).
    assert first.mark_in_flight([_correction(first, "k")], SERVER, NOW) == {"k"}
    # A claim older than the lease belongs to a run that died: anyone may take it over.
    monkeypatch.setattr(submissions, "CLAIM_LEASE", timedelta(0))
    assert second.mark_in_flight([_correction(second, "k")], SERVER, NOW) == {"k"}
    entry = second.entries_for(["k"])["k"]
    assert (entry.state, entry.content_hash, entry.confirmed_hash) == (SubmissionState.IN_FLIGHT, "h2", "h1")


def test_a_record_whose_write_is_in_doubt_is_left_alone_for_the_window(
    mongo_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = SubmissionLog(mongo_db), SubmissionLog(mongo_db)
    _confirmed(first, "k")
    assert first.mark_in_flight([_correction(first, "k")], SERVER, NOW) == {"k"}
    # The request outlived the lease taken at the mark: the window runs from the outcome, not the mark.
    long_ago = datetime.now(UTC) - 2 * submissions.CLAIM_LEASE
    mongo_db["openmrs_submissions"].update_one({"_id": "k"}, {"$set": {"busy_since": long_ago}})
    lost = SubmissionOutcome("k", SubmissionState.FAILED_RETRYABLE, "v1", (), in_doubt=True)
    first.record_outcomes([lost], NOW)
    # Not in flight any more, but OpenMRS may still be writing what was sent: nobody sends it now,
    # the run that sent it included.
    assert second.mark_in_flight([_correction(second, "k")], SERVER, NOW) == set()
    assert not second.hold_claim("k", second.entries_for(["k"])["k"].claim)
    assert first.mark_in_flight([_correction(first, "k")], SERVER, NOW) == set()
    assert not first.hold_claim("k", first.entries_for(["k"])["k"].claim)
    monkeypatch.setattr(submissions, "CLAIM_LEASE", timedelta(0))
    assert second.mark_in_flight([_correction(second, "k")], SERVER, NOW) == {"k"}
    # An outcome that is not in doubt, of the run holding the claim, clears it.
    second.record_outcomes(
        [SubmissionOutcome("k", SubmissionState.FAILED_RETRYABLE, "v1", (), held_claim=True)], NOW
    )
    monkeypatch.setattr(submissions, "CLAIM_LEASE", timedelta(days=1))
    assert first.mark_in_flight([_correction(first, "k")], SERVER, NOW) == {"k"}


def test_only_the_run_holding_a_claim_releases_it(mongo_db: Database, monkeypatch) -> None:
    holder, other, third = SubmissionLog(mongo_db), SubmissionLog(mongo_db), SubmissionLog(mongo_db)
    _confirmed(holder, "k")
    assert holder.mark_in_flight([_correction(holder, "k")], SERVER, NOW) == {"k"}  # sending now
    # A run that planned k as a look (unclaimed) ends it meanwhile: the holder still sends it.
    other.mark_in_flight([PendingSubmission("k", "v1", "h1", fresh=False)], SERVER, NOW)
    found = SubmissionOutcome("k", SubmissionState.ALREADY_PRESENT, "v1", (), confirmed_hash="h1")
    other.record_outcomes([found], NOW)
    assert third.mark_in_flight([_correction(third, "k")], SERVER, NOW) == set()
    # A run whose lease ran out, and whose claim another run took over, ends it late: still held.
    monkeypatch.setattr(submissions, "CLAIM_LEASE", timedelta(0))
    assert third.mark_in_flight([_correction(third, "k")], SERVER, NOW) == {"k"}
    monkeypatch.setattr(submissions, "CLAIM_LEASE", timedelta(days=1))
    late = SubmissionOutcome("k", SubmissionState.SUBMITTED, "v2", (), confirmed_hash="h2", held_claim=True)
    holder.record_outcomes([late], NOW)
    assert other.mark_in_flight([_correction(other, "k")], SERVER, NOW) == set()
    # The holder's own outcome releases it.
    done = SubmissionOutcome("k", SubmissionState.SUBMITTED, "v2", (), confirmed_hash="h2", held_claim=True)
    third.record_outcomes([done], NOW)
    assert other.mark_in_flight([_correction(other, "k")], SERVER, NOW) == {"k"}


def test_creates_are_marked_whoever_else_marks_them(mongo_db: Database) -> None:
    # A create is safe to race (one uuid, OpenMRS keeps one condition): no claim is needed.
    first, second = SubmissionLog(mongo_db), SubmissionLog(mongo_db)
    assert first.mark_in_flight([PendingSubmission("k", "u", "h", fresh=False, new=True)], SERVER, NOW) == {
        "k"
    }
    assert second.mark_in_flight([PendingSubmission("k", "u", "h", fresh=False, new=True)], SERVER, NOW) == {
        "k"
    }


def test_a_claimed_create_of_a_new_key_is_marked_by_one_run_only(mongo_db: Database) -> None:
    # Over FHIR a create is claimed too: FHIR2 ignores a client id, so two runs would make two conditions.
    first, second = SubmissionLog(mongo_db), SubmissionLog(mongo_db)
    new = PendingSubmission("k", "u", "h", fresh=False, new=True, claimed=True)
    assert first.mark_in_flight([new], SERVER, NOW) == {"k"}
    assert second.mark_in_flight([new], SERVER, NOW) == set()  # planned from the same (empty) read
    entry = first.entries_for(["k"])["k"]
    assert (entry.state, entry.content_hash, entry.first_attempt_at is not None) == (
        SubmissionState.IN_FLIGHT,
        "h",
        True,
    )
    assert first.hold_claim("k", None) and not second.hold_claim("k", None)


def test_a_claimed_create_for_another_server_starts_the_entry_afresh(mongo_db: Database) -> None:
    log = SubmissionLog(mongo_db)
    _confirmed(log, "k")
    claim = log.entries_for(["k"])["k"].claim
    fresh = PendingSubmission("k", "u2", "h2", fresh=True, claimed=True, claim=claim)
    assert log.mark_in_flight([fresh], "https://other.example.org/openmrs", NOW) == {"k"}
    entry = log.entries_for(["k"])["k"]
    assert (entry.condition_uuid, entry.confirmed_hash, entry.attempts) == ("u2", None, ())


def test_new_content_starts_a_new_retry_window(mongo_db: Database) -> None:
    log = SubmissionLog(mongo_db)
    log.mark_in_flight([PendingSubmission("k", "u", "h1", fresh=False, new=True)], SERVER, NOW)
    log.record_outcome("k", SubmissionState.PATIENT_NOT_FOUND, [], condition_uuid="u", now=NOW)
    day_40, day_41 = NOW + timedelta(days=40), NOW + timedelta(days=41)
    assert log.retryable_keys(day_40, 30) == []  # the window of h1 is over
    # The same record with other content (the patient's details corrected at the clinic): 30 days again.
    log.mark_in_flight([PendingSubmission("k", "u", "h2", fresh=False, changed=True)], SERVER, day_40)
    log.record_outcome("k", SubmissionState.PATIENT_NOT_FOUND, [], condition_uuid="u", now=day_40)
    assert log.entries_for(["k"])["k"].first_attempt_at.replace(tzinfo=UTC) == day_40
    assert log.retryable_keys(day_41, 30) == ["k"]
    log.mark_in_flight([PendingSubmission("k", "u", "h2", fresh=False)], SERVER, day_41)  # same content
    assert log.entries_for(["k"])["k"].first_attempt_at.replace(tzinfo=UTC) == day_40


def test_a_refused_log_write_is_reported_by_codes_never_quoting_the_entries(mongo_db, monkeypatch) -> None:
    # A write-concern error on the outcome write: pymongo's text would quote keys and condition uuids.
    from pymongo.collection import Collection
    from pymongo.errors import BulkWriteError

    from tm2_pipeline.store.errors import MongoRefused

    def refused(collection, operations, *args, **kwargs):
        raise BulkWriteError(
            {
                "nInserted": 0,
                "nModified": 1,
                "writeErrors": [],
                "writeConcernErrors": [{"code": 64, "codeName": "WriteConcernFailed", "errmsg": "key k1 u1"}],
            }
        )

    log = SubmissionLog(mongo_db, target="db.example.org:27017")
    log.mark_in_flight([PendingSubmission("k1", "u1", "h1", fresh=False)], SERVER, NOW)
    monkeypatch.setattr(Collection, "bulk_write", refused)
    with pytest.raises(MongoRefused) as caught:
        log.record_outcomes([SubmissionOutcome("k1", SubmissionState.SUBMITTED, "u1", ())], NOW)
    assert str(caught.value) == (
        "MongoDB at db.example.org:27017 refused the operation: BulkWriteError: 0 inserted, 1 modified; "
        "write concern errors: code 64 (WriteConcernFailed)"
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_send_again_leaves_an_entry_another_run_marked_since_with_other_content(mongo_db: Database) -> None:
    first, second = SubmissionLog(mongo_db), SubmissionLog(mongo_db)
    _confirmed(first, "k")  # content h1, confirmed
    _confirmed(first, "j")
    note = attempt(1)
    # Another run has marked k with newer content since: its outcome stands; j is this run's to redo.
    second.mark_in_flight([_correction(second, "k")], SERVER, NOW)
    first.send_again([("k", "h1"), ("j", "h1")], note, NOW)
    entries = first.entries_for(["k", "j"])
    assert (entries["k"].state, entries["k"].content_hash) == (SubmissionState.IN_FLIGHT, "h2")
    assert entries["j"].state is SubmissionState.FAILED_RETRYABLE and entries["j"].confirmed_hash == "h1"
    assert entries["j"].attempts[-1].message == note.message
