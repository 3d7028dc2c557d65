"""Exactly-once submission end to end: the emulator over real HTTP, the submission log on SecantusDB."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from pymongo.database import Database

from tm2_pipeline.identity import condition_uuid
from tm2_pipeline.openmrs.client_config import ClientConfig
from tm2_pipeline.openmrs.emulator.faults import FaultConfig
from tm2_pipeline.openmrs.emulator.server import SandboxServer, open_sandbox
from tm2_pipeline.openmrs.errors import OpenMRSAuthError, TransientOpenMRSError
from tm2_pipeline.openmrs.states import SubmissionOutcome, SubmissionState
from tm2_pipeline.openmrs.submitter import run_submission
from tm2_pipeline.store import submissions
from tm2_pipeline.store.records import RecordStore
from tm2_pipeline.store.submissions import SubmissionLog
from tm2_pipeline_tests.openmrs_sample_records import make_record, sample_records, with_changes

pytestmark = pytest.mark.integration

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


class SimulatedCrash(RuntimeError):
    pass


class CrashingLog(SubmissionLog):
    """The process dies after OpenMRS answered but before the outcomes reach the log (once)."""

    crashed = False

    def record_outcomes(self, outcomes: Sequence[SubmissionOutcome], now: datetime) -> None:
        if not self.crashed:
            self.crashed = True
            raise SimulatedCrash("killed between the POST and the log update")
        super().record_outcomes(outcomes, now)


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    with open_sandbox(None) as sandbox, SandboxServer(sandbox) as running:
        yield running


def config_for(server: SandboxServer, **overrides) -> ClientConfig:
    options = {
        "base_url": server.base_url,
        "username": "admin",
        "password": "Admin123",
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        **overrides,
    }
    return ClientConfig(**options)


def submit(server: SandboxServer, records, log: SubmissionLog, now: datetime = NOW, **overrides):
    return run_submission([records], config=config_for(server, **overrides), log=log, now=now)


def submitted_once(server: SandboxServer, mongo_db: Database) -> tuple[dict, SubmissionLog]:
    """One record in OpenMRS (its first version), and the log that sent it."""
    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    log = SubmissionLog(mongo_db)
    submit(server, [record], log)
    return record, log


def submit_elsewhere(server: SandboxServer, mongo_db: Database, runs: Sequence[list]) -> list[int]:
    """Runs of another pipeline (its own submission log) against the same OpenMRS; corrections made."""
    other_db = mongo_db.client[mongo_db.name + "_other"]
    try:
        return [submit(server, records, SubmissionLog(other_db)).corrected for records in runs]
    finally:
        mongo_db.client.drop_database(other_db.name)


def conditions_by_uuid(server: SandboxServer) -> dict[str, dict]:
    return dict(server.sandbox.state.conditions)


def expected_outcomes(server: SandboxServer, records) -> dict[str, SubmissionState]:
    """What each record should end as, from the seed: one patient -> in OpenMRS."""
    outcome = {}
    for record in records:
        found = len(server.sandbox.state.find_patients(record["patient_id"]))
        outcome[record["_id"]] = {0: SubmissionState.PATIENT_NOT_FOUND, 1: SubmissionState.SUBMITTED}.get(
            found, SubmissionState.AMBIGUOUS_PATIENT
        )
    return outcome


def assert_each_record_in_openmrs_once(server: SandboxServer, records, log: SubmissionLog) -> int:
    expected = expected_outcomes(server, records)
    in_openmrs = {key for key, state in expected.items() if state is SubmissionState.SUBMITTED}
    conditions = conditions_by_uuid(server)
    assert set(conditions) == {condition_uuid(key) for key in in_openmrs}, "missing or extra conditions"
    per_patient = Counter((c["patient"], c["onsetDate"], c["additionalDetail"]) for c in conditions.values())
    assert max(per_patient.values()) == 1
    entries = log.entries_for([record["_id"] for record in records])
    for key, state in expected.items():
        if state is SubmissionState.SUBMITTED:
            assert entries[key].state in (SubmissionState.SUBMITTED, SubmissionState.ALREADY_PRESENT)
            assert entries[key].confirmed_hash is not None
        else:
            assert entries[key].state is state
    return len(in_openmrs)


def test_the_sample_reaches_openmrs_once_and_a_rerun_sends_nothing(
    server: SandboxServer, mongo_db: Database
) -> None:
    records, log = sample_records(), SubmissionLog(mongo_db)
    summary = submit(server, records, log)
    created = assert_each_record_in_openmrs_once(server, records, log)
    assert summary.submitted == created and summary.failed == 0 and summary.total == len(records)
    assert summary.requests["POST"] == created  # one request per new record, nothing else written
    assert summary.state_counts["patient_not_found"] >= 5 and summary.state_counts["ambiguous_patient"] >= 1
    kinds = Counter("coded" if c["coded"] else "nonCoded" for c in conditions_by_uuid(server).values())
    assert kinds["coded"] > 10 and kinds["nonCoded"] > 10

    again = submit(server, records, log, now=NOW + timedelta(hours=1))
    assert again.submitted == 0 and "POST" not in again.requests
    assert again.unchanged == created + again.state_counts["ambiguous_patient"]
    assert len(conditions_by_uuid(server)) == created


def test_a_crash_between_post_and_log_update_creates_nothing_twice(
    server: SandboxServer, mongo_db: Database
) -> None:
    records = sample_records()[:40]
    with pytest.raises(SimulatedCrash):
        submit(server, records, CrashingLog(mongo_db))
    log = SubmissionLog(mongo_db)
    assert set(log.state_counts()) == {"in_flight"}, "the write-ahead mark is all the log knows"
    created_before = len(conditions_by_uuid(server))
    assert created_before > 0

    summary = submit(server, records, log, now=NOW + timedelta(minutes=5))
    assert summary.submitted == 0 and "POST" not in summary.requests
    assert summary.state_counts["already_present"] == created_before
    assert assert_each_record_in_openmrs_once(server, records, log) == created_before


def test_repeated_runs_through_30_percent_faults_converge_to_exactly_once(mongo_db: Database) -> None:
    records, log = sample_records(), SubmissionLog(mongo_db)
    faults = FaultConfig.spread(0.3, hang_s=1.0, seed=20250601)
    with open_sandbox(None, faults=faults) as sandbox, SandboxServer(sandbox) as server:
        runs = []
        for run in range(10):
            try:
                summary = submit(
                    server, records, log, now=NOW + timedelta(minutes=run), read_timeout_s=0.5, max_attempts=4
                )
            except TransientOpenMRSError:
                continue  # e.g. the login itself met four faults in a row: that run fails, the next goes on
            runs.append(summary)
            if summary.failed == 0:
                break
        assert runs[-1].failed == 0, f"did not converge: {[s.state_counts for s in runs]}"
        assert sum(s.submitted for s in runs) + runs[-1].state_counts.get("already_present", 0) >= 1
        injected = sandbox.faults.injected
        assert {"drop", "timeout", "lost_response", "error_500", "bad_gateway"} <= set(injected)
        assert_each_record_in_openmrs_once(server, records, log)
    entries = log.entries_for([record["_id"] for record in records]).values()
    retried = [entry for entry in entries if len(entry.attempts) > 1]
    assert retried, "with 30% faults some record needed more than one attempt"
    assert any(
        attempt.status in (502, 503, 504, 500) or attempt.status is None
        for entry in retried
        for attempt in entry.attempts
    )
    assert all(
        str(record["patient_id"]) not in a.message for record in records for e in entries for a in e.attempts
    )


def test_a_corrected_severity_becomes_one_new_version(server: SandboxServer, mongo_db: Database) -> None:
    log = SubmissionLog(mongo_db)
    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    submit(server, [record], log)
    original = condition_uuid(record["_id"])

    corrected = with_changes(record, severity="Severe")
    summary = submit(server, [corrected], log, now=NOW + timedelta(days=1))
    assert (summary.submitted, summary.corrected, summary.requests.get("POST")) == (1, 1, 1)
    conditions = conditions_by_uuid(server)
    assert conditions[original]["voided"] is True
    (current,) = [c for c in conditions.values() if not c["voided"]]
    assert current["previousVersion"] == original and "Severity: Severe" in current["additionalDetail"]
    entry = log.entries_for([record["_id"]])[record["_id"]]
    assert (entry.state, entry.condition_uuid, entry.confirmed_hash) == (
        SubmissionState.SUBMITTED,
        current["uuid"],
        corrected["content_hash"],
    )

    again = submit(server, [corrected], log, now=NOW + timedelta(days=2))
    assert again.submitted == 0 and "POST" not in again.requests
    assert len(conditions_by_uuid(server)) == 2


def test_statuses_a_clinician_changed_in_openmrs_are_kept(server: SandboxServer, mongo_db: Database) -> None:
    """An export carries no status: a problem marked inactive in OpenMRS is neither re-activated by a
    look (a lost log) nor by a correction of the record's content."""
    record, log = submitted_once(server, mongo_db)
    state = server.sandbox.state
    state.update_condition(state.conditions[condition_uuid(record["_id"])], {"clinicalStatus": "INACTIVE"})

    assert submit_elsewhere(server, mongo_db, [[record]]) == [0]  # a lost log: found as it is
    corrected = with_changes(record, severity="Severe")
    assert submit(server, [corrected], log, now=NOW + timedelta(days=1)).corrected == 1
    (current,) = [c for c in conditions_by_uuid(server).values() if not c["voided"]]
    assert current["clinicalStatus"] == "INACTIVE" and "Severity: Severe" in current["additionalDetail"]
    assert current["verificationStatus"] == "CONFIRMED"


def test_a_correction_whose_answer_was_lost_is_found_not_resent(
    server: SandboxServer, mongo_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    submit(server, [record], SubmissionLog(mongo_db))
    corrected = with_changes(record, severity="Severe")
    with pytest.raises(SimulatedCrash):
        submit(server, [corrected], CrashingLog(mongo_db), now=NOW + timedelta(days=1))
    assert len(conditions_by_uuid(server)) == 2

    # Within the crashed run's lease another run leaves the correction alone: it cannot tell a dead
    # run from a slow one, and a second correction of the same version would fork the condition.
    waiting = submit(server, [corrected], SubmissionLog(mongo_db), now=NOW + timedelta(days=1))
    assert waiting.requests.get("POST", 0) == 0 and waiting.state_counts == {"in_flight": 1}

    monkeypatch.setattr(submissions, "CLAIM_LEASE", timedelta(0))  # the lease has run out
    log = SubmissionLog(mongo_db)
    summary = submit(server, [corrected], log, now=NOW + timedelta(days=2))
    assert "POST" not in summary.requests and summary.state_counts == {"already_present": 1}
    (current,) = [c for c in conditions_by_uuid(server).values() if not c["voided"]]
    assert log.entries_for([record["_id"]])[record["_id"]].condition_uuid == current["uuid"]

    # A later correction builds on the version that was found.
    summary = submit(server, [with_changes(record, severity="Moderate")], log, now=NOW + timedelta(days=3))
    assert summary.corrected == 1
    (latest,) = [c for c in conditions_by_uuid(server).values() if not c["voided"]]
    assert latest["previousVersion"] == current["uuid"]


def test_two_runs_correcting_the_same_records_at_once_make_one_new_version_each(
    server: SandboxServer, mongo_db: Database
) -> None:
    records = [r for r in sample_records() if len(server.sandbox.state.find_patients(r["patient_id"])) == 1][
        :40
    ]
    submit(server, records, SubmissionLog(mongo_db))
    corrected = [with_changes(r, severity="Severe" if r["severity"] != "Severe" else "Mild") for r in records]
    later = NOW + timedelta(days=1)
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(submit, server, corrected, SubmissionLog(mongo_db), later) for _ in range(2)]
        summaries = [run.result() for run in runs]
    # Each record corrected by exactly one of the runs; the other left it alone or found it done.
    assert sum(summary.corrected for summary in summaries) == len(records)
    conditions = conditions_by_uuid(server)

    def first_version(uuid: str) -> str:
        while conditions[uuid].get("previousVersion"):
            uuid = conditions[uuid]["previousVersion"]
        return uuid

    live = Counter(first_version(uuid) for uuid, c in conditions.items() if not c["voided"])
    assert live == Counter(condition_uuid(record["_id"]) for record in records)  # no forks
    assert len(conditions) == 2 * len(records)
    again = submit(server, corrected, SubmissionLog(mongo_db), NOW + timedelta(days=2))
    assert again.submitted == 0 and set(again.state_counts) <= {"submitted", "already_present"}


def test_a_correction_raced_by_another_run_converges_on_its_version(
    server: SandboxServer, mongo_db: Database
) -> None:
    record, ours = submitted_once(server, mongo_db)
    corrected = with_changes(record, severity="Severe")
    # Another run (its own log) sends the same correction first.
    assert submit_elsewhere(server, mongo_db, [[corrected]]) == [1]
    summary = submit(server, [corrected], ours, now=NOW + timedelta(days=1))
    assert summary.state_counts == {"already_present": 1} and summary.corrected == 0
    (current,) = [c for c in conditions_by_uuid(server).values() if not c["voided"]]
    assert len(conditions_by_uuid(server)) == 2
    assert ours.entries_for([record["_id"]])[record["_id"]].condition_uuid == current["uuid"]


def test_a_log_two_versions_behind_builds_on_the_newest_version(
    server: SandboxServer, mongo_db: Database
) -> None:
    record, ours = submitted_once(server, mongo_db)
    # Two corrections made elsewhere: our log still knows the first version only.
    elsewhere = [[with_changes(record, severity=severity)] for severity in ("Severe", "Moderate")]
    assert submit_elsewhere(server, mongo_db, elsewhere) == [1, 1]
    (third,) = [c for c in conditions_by_uuid(server).values() if not c["voided"]]

    summary = submit(server, [with_changes(record, severity="Severe")], ours, now=NOW + timedelta(days=1))
    assert summary.corrected == 1 and summary.state_counts == {"submitted": 1}
    (fourth,) = [c for c in conditions_by_uuid(server).values() if not c["voided"]]
    assert fourth["previousVersion"] == third["uuid"] and "Severity: Severe" in fourth["additionalDetail"]
    assert ours.entries_for([record["_id"]])[record["_id"]].condition_uuid == fourth["uuid"]


def test_wrong_password_fails_once_with_one_login_per_run(server: SandboxServer, mongo_db: Database) -> None:
    log = SubmissionLog(mongo_db)
    records = sample_records()[:20]
    for run in range(2):
        with pytest.raises(OpenMRSAuthError) as caught:
            submit(server, records, log, password="not-the-password")
        assert "'admin'" in str(caught.value) and "not-the-password" not in str(caught.value)
        assert server.sandbox.state.login_attempts["admin"] == run + 1
    assert log.state_counts() == {}, "a refused login marks nothing in flight"
    assert conditions_by_uuid(server) == {}


def test_a_400_is_recorded_as_rejected_and_not_retried(server: SandboxServer, mongo_db: Database) -> None:
    log = SubmissionLog(mongo_db)
    record = make_record("MRN-01001", "SK01", "2024-02-30")  # a date OpenMRS cannot convert
    summary = submit(server, [record], log)
    assert summary.state_counts == {"rejected_by_server": 1} and summary.requests["POST"] == 1
    entry = log.entries_for([record["_id"]])[record["_id"]]
    assert [(a.method, a.status) for a in entry.attempts] == [("POST", 400)]
    assert "onsetDate" in entry.attempts[0].message
    # Waits for a person: the next run sends nothing.
    assert "POST" not in submit(server, [record], log, now=NOW + timedelta(days=1)).requests


def test_a_patient_registered_later_is_picked_up_within_the_window(
    server: SandboxServer, mongo_db: Database
) -> None:
    log = SubmissionLog(mongo_db)
    record = make_record("MRN-77777", "SK01", "2024-01-15")
    assert submit(server, [record], log).state_counts == {"patient_not_found": 1}
    patient = {
        "uuid": "late-patient",
        "identifiers": [{"identifier": "MRN-77777", "identifierType": "Clinic MRN"}],
        "givenName": "Late",
        "familyName": "Arrival",
        "gender": "F",
        "birthdate": "1990-01-01",
    }
    server.sandbox.state.patients[patient["uuid"]] = patient
    server.sandbox.state.patients_by_identifier["MRN-77777"].append(patient)
    summary = submit(server, [record], log, now=NOW + timedelta(days=3))
    assert summary.state_counts == {"submitted": 1} and summary.submitted == 1
    assert conditions_by_uuid(server)[condition_uuid(record["_id"])]["patient"] == "late-patient"


def test_a_concept_is_required_when_noncoded_is_not_allowed(
    server: SandboxServer, mongo_db: Database
) -> None:
    from tm2_pipeline.openmrs.submitter import SubmitterOptions

    unmapped = make_record("MRN-01001", "SK01", "2024-01-15")  # SK01 has no concept in the seed
    mapped = make_record("MRN-01001", "SK00", "2024-01-15")
    summary = run_submission(
        [[unmapped, mapped]],
        config=config_for(server),
        log=SubmissionLog(mongo_db),
        now=NOW,
        options=SubmitterOptions(allow_noncoded=False),
    )
    assert summary.state_counts == {"concept_not_found": 1, "submitted": 1}
    (condition,) = conditions_by_uuid(server).values()
    assert condition["coded"] is not None


def test_a_record_resumed_as_a_create_is_not_corrected_while_another_run_holds_it(
    server: SandboxServer, mongo_db: Database
) -> None:
    # Never confirmed (a crash after the create), so the next runs resume it as a create: they look,
    # find the first version with other content, and would post a new version. Another live run
    # already claimed that correction: a second post of a new version would fork the condition.
    record, _ = submitted_once(server, mongo_db)
    unsettled = {"state": "in_flight", "confirmed_hash": None}
    at = datetime.now(UTC)
    held = {"claim": "their-token", "claimed_by": "another-run", "claimed_at": at, "busy_since": at}
    mongo_db.openmrs_submissions.update_one({"_id": record["_id"]}, {"$set": {**unsettled, **held}})

    summary = submit(server, [with_changes(record, severity="Severe")], SubmissionLog(mongo_db), NOW)
    assert summary.state_counts == {"in_flight": 1} and summary.requests.get("POST", 0) == 0
    assert len(conditions_by_uuid(server)) == 1
    entry = mongo_db.openmrs_submissions.find_one({"_id": record["_id"]})
    assert (entry["claim"], entry["claimed_by"]) == ("their-token", "another-run")  # theirs to finish

    # Unclaimed (or the claim's lease run out), the same run corrects it, once.
    mongo_db.openmrs_submissions.update_one({"_id": record["_id"]}, {"$set": {"busy_since": None}})
    summary = submit(server, [with_changes(record, severity="Severe")], SubmissionLog(mongo_db), NOW)
    assert summary.corrected == 1 and summary.state_counts == {"submitted": 1}


def slow_writes(app, posts: Counter, delay_s: float, counted_as):
    """OpenMRS busy with every write that `counted_as(scope)` names (a key to count it under; None:
    not slowed) for `delay_s` before it writes it: the client times out first, and the write lands
    after any look the client takes meanwhile."""
    import asyncio
    import base64

    async def middleware(scope, receive, send):
        name = counted_as(scope) if scope["type"] == "http" else None
        if name is not None:
            posts[name] += 1
            body = []  # read whole first: a server goes on with a request whose client has gone
            while not body or body[-1].get("more_body"):
                body.append(await receive())
            await asyncio.sleep(delay_s)
            # It was let in when it arrived: the run's logout meanwhile must not refuse it now.
            credentials = base64.b64encode(b"admin:Admin123")
            scope = {**scope, "headers": [*scope["headers"], (b"authorization", b"Basic " + credentials)]}

            async def replay():
                return body.pop(0) if body else {"type": "http.disconnect"}

            return await app(scope, replay, send)
        await app(scope, receive, send)

    return middleware


def slow_corrections(app, posts: Counter, delay_s: float):
    """Every correction (`POST /condition/{uuid}`) slowed, counted by the uuid it replaces."""

    def correction(scope) -> str | None:
        parts = scope.get("path", "").rstrip("/").split("/")
        return parts[-1] if scope["method"] == "POST" and parts[-2] == "condition" else None

    return slow_writes(app, posts, delay_s, correction)


def test_a_correction_that_timed_out_is_not_posted_again_by_the_same_run(
    mongo_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from tm2_pipeline.openmrs.emulator.server import Sandbox

    posts: Counter = Counter()
    with open_sandbox(None) as sandbox:
        slow = Sandbox(state=sandbox.state, app=slow_corrections(sandbox.app, posts, 1.0), faults=None)
        with SandboxServer(slow) as server:
            record, log = submitted_once(server, mongo_db)
            corrected = with_changes(record, severity="Severe")
            summary = submit(server, [corrected], log, NOW + timedelta(days=1), read_timeout_s=0.3)
            assert summary.state_counts == {"failed_retryable": 1} and sum(posts.values()) == 1
            # A run right after leaves it alone: OpenMRS may still be writing it, and a look now
            # would miss it and post a second version (a fork).
            summary = submit(server, [corrected], SubmissionLog(mongo_db), NOW + timedelta(days=1))
            assert summary.state_counts == {"in_flight": 1} and "POST" not in summary.requests
            time.sleep(1.2)  # the late version lands
            live = [c for c in conditions_by_uuid(server).values() if not c["voided"]]
            assert len(live) == 1 and "Severity: Severe" in live[0]["additionalDetail"]

            # Once the window has passed, the next run finds it and sends nothing.
            monkeypatch.setattr(submissions, "CLAIM_LEASE", timedelta(0))
            summary = submit(server, [corrected], log, NOW + timedelta(days=2))
            assert summary.state_counts == {"already_present": 1} and sum(posts.values()) == 1


def duplicates_answered_409(app):
    """A gateway (or another OpenMRS version) that answers a create of a uuid already held with 409."""

    async def middleware(scope, receive, send):
        async def send_409(message):
            if message["type"] == "http.response.start" and message["status"] == 500:
                message = {**message, "status": 409}
            await send(message)

        creating = (
            scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/condition")
        )
        await app(scope, receive, send_409 if creating else send)

    return middleware


def test_a_create_answered_409_is_looked_up_not_recorded_as_refused(mongo_db: Database) -> None:
    from tm2_pipeline.openmrs.emulator.server import Sandbox

    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    with open_sandbox(None) as sandbox:
        with SandboxServer(sandbox) as plain:  # another run, with its own log, created it first
            submit(plain, [record], SubmissionLog(mongo_db.client[mongo_db.name + "_other"]))
        mongo_db.client.drop_database(mongo_db.name + "_other")
        gateway = Sandbox(state=sandbox.state, app=duplicates_answered_409(sandbox.app), faults=None)
        with SandboxServer(gateway) as server:
            summary = submit(server, [record], SubmissionLog(mongo_db))
    assert summary.state_counts == {"already_present": 1} and summary.requests["POST"] == 1


def test_a_batch_read_before_newer_content_was_stored_and_sent_does_not_put_the_old_back(
    server: SandboxServer, mongo_db: Database
) -> None:
    from tm2_pipeline.store.records import RecordStore

    old = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    newer = with_changes(old, severity="Severe")
    log = SubmissionLog(mongo_db)
    submit(server, [old], log)
    # This run read `old` from the store; meanwhile a later file stored `newer`, and its run sent it.
    mongo_db.tm2_records.insert_one(dict(newer))
    submit(server, [newer], log, now=NOW + timedelta(days=1))
    config = config_for(server)
    later = NOW + timedelta(days=2)
    summary = run_submission([[old]], config=config, log=log, now=later, store=RecordStore(mongo_db))
    assert summary.requests.get("POST", 0) == 0 and summary.unchanged == 1
    (live,) = [c for c in conditions_by_uuid(server).values() if not c["voided"]]
    assert "Severity: Severe" in live["additionalDetail"]


class StoresNewerWhileSending(SubmissionLog):
    """Right after this run's write-ahead mark, another file stores `newer` for the record and its run
    submits it at once (while this run holds the record, about to send its older copy)."""

    def __init__(self, db: Database, newer: dict, other_run) -> None:
        super().__init__(db)
        self.newer, self.other_run, self.other_summaries = newer, other_run, []

    def mark_in_flight(self, pending, server, now):
        marked = super().mark_in_flight(pending, server, now)
        if not self.other_summaries:
            self._db.tm2_records.replace_one({"_id": self.newer["_id"]}, dict(self.newer), upsert=True)
            self.other_summaries.append(self.other_run([self.newer]))
        return marked


def submit_from_store(server: SandboxServer, mongo_db: Database, records, log: SubmissionLog, api: str):
    config = config_for(server, api=api)
    return run_submission([records], config=config, log=log, now=NOW, store=RecordStore(mongo_db))


@pytest.mark.parametrize("api", ["rest", "fhir"])
def test_newer_content_stored_while_an_older_copy_is_sent_reaches_openmrs(
    server: SandboxServer, mongo_db: Database, api: str
) -> None:
    original = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    submit_from_store(server, mongo_db, [original], SubmissionLog(mongo_db), api)
    older, newer = with_changes(original, severity="Moderate"), with_changes(original, severity="Severe")
    mongo_db.tm2_records.replace_one({"_id": older["_id"]}, dict(older), upsert=True)

    def other_run(records):
        return submit_from_store(server, mongo_db, records, SubmissionLog(mongo_db), api)

    log = StoresNewerWhileSending(mongo_db, newer, other_run)
    summary = submit_from_store(server, mongo_db, [older], log, api)
    # The other run found the record held by this one and left it: this one sends the newer copy.
    assert log.other_summaries[0].state_counts == {"in_flight": 1}
    assert summary.state_counts == {"submitted": 1} and summary.total == 1
    (live,) = [c for c in conditions_by_uuid(server).values() if not c["voided"]]
    assert "Severity: Severe" in live["additionalDetail"]
    entry = log.entries_for([original["_id"]])[original["_id"]]
    assert (entry.state, entry.confirmed_hash) == (SubmissionState.SUBMITTED, newer["content_hash"])
    assert any("newer content was stored" in attempt.message for attempt in entry.attempts)


def test_a_create_that_meets_a_newer_copy_does_not_put_the_older_one_back(
    server: SandboxServer, mongo_db: Database
) -> None:
    older = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    newer = with_changes(older, severity="Severe")
    mongo_db.tm2_records.replace_one({"_id": older["_id"]}, dict(older), upsert=True)

    def other_run(records):
        return submit_from_store(server, mongo_db, records, SubmissionLog(mongo_db), "rest")

    log = StoresNewerWhileSending(mongo_db, newer, other_run)
    summary = submit_from_store(server, mongo_db, [older], log, "rest")
    assert log.other_summaries[0].state_counts == {"submitted": 1}  # created first, with the newer copy
    assert summary.state_counts == {"already_present": 1} and summary.corrected == 0
    (condition,) = conditions_by_uuid(server).values()  # no older version posted over it
    assert "Severity: Severe" in condition["additionalDetail"] and not condition["voided"]


def test_a_record_whose_content_keeps_changing_is_left_to_a_later_run_not_looped(
    server: SandboxServer, mongo_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tm2_pipeline.openmrs import store_check

    monkeypatch.setattr(store_check, "MAX_REPLANS", 0)  # no second plan in this run
    original = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    submit_from_store(server, mongo_db, [original], SubmissionLog(mongo_db), "rest")
    older, newer = with_changes(original, severity="Moderate"), with_changes(original, severity="Severe")
    mongo_db.tm2_records.replace_one({"_id": older["_id"]}, dict(older), upsert=True)

    def other_run(records):
        return submit_from_store(server, mongo_db, records, SubmissionLog(mongo_db), "rest")

    log = StoresNewerWhileSending(mongo_db, newer, other_run)
    summary = submit_from_store(server, mongo_db, [older], log, "rest")
    assert summary.state_counts == {"failed_retryable": 1}
    assert log.retryable_keys(NOW, 30) == [original["_id"]]  # the nightly retry sends the newer copy


class DiesAtTheOutcomeOf(SubmissionLog):
    """The process is killed when it writes the outcome of `last` (no cleanup runs: SIGKILL, an
    out-of-memory kill)."""

    def __init__(self, db: Database, last: str) -> None:
        super().__init__(db)
        self.last = last

    def record_outcomes(self, outcomes, now):
        if any(outcome.key == self.last for outcome in outcomes):
            raise SimulatedCrash("killed")
        super().record_outcomes(outcomes, now)


@pytest.mark.parametrize("api", ["rest", "fhir"])
def test_a_run_killed_after_confirming_an_older_copy_leaves_the_newer_one_to_a_later_run(
    mongo_db: Database, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    """While this run sends its older copy of a record, another file stores newer content and its run
    finds the record held by this one. This run confirms the older copy, then is killed before it
    finishes: the newer content must still reach OpenMRS, or be left for the nightly retry."""
    import asyncio

    from tm2_pipeline.openmrs import submitter
    from tm2_pipeline.openmrs.emulator.server import Sandbox

    monkeypatch.setattr(submitter._Submitter, "leave_unchecked", lambda self: None)  # killed: no cleanup
    original = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    older, newer = with_changes(original, severity="Moderate"), with_changes(original, severity="Severe")
    slow = make_record("MRN-09999", "SK01", "2024-01-15", "Ayurveda", "Mild")  # ends after the others
    others: list = []
    armed = False
    with open_sandbox(None) as sandbox:

        def another_file_stores_newer_and_runs() -> None:
            mongo_db.tm2_records.replace_one({"_id": newer["_id"]}, dict(newer), upsert=True)
            others.append(submit_from_store(server, mongo_db, [newer], SubmissionLog(mongo_db), api))

        async def app(scope, receive, send):
            if scope["type"] == "http":
                if slow["patient_id"].encode() in scope.get("query_string", b""):
                    await asyncio.sleep(1.5)
                writes = scope["method"] in ("POST", "PUT") and "/condition" in scope["path"].lower()
                if writes and armed and not others:  # while this run sends its older copy
                    await asyncio.to_thread(another_file_stores_newer_and_runs)
            await sandbox.app(scope, receive, send)

        with SandboxServer(Sandbox(state=sandbox.state, app=app, faults=None)) as server:
            mongo_db.tm2_records.replace_one({"_id": original["_id"]}, dict(original), upsert=True)
            submit_from_store(server, mongo_db, [original], SubmissionLog(mongo_db), api)
            for record in (older, slow):
                mongo_db.tm2_records.replace_one({"_id": record["_id"]}, dict(record), upsert=True)
            log, armed = DiesAtTheOutcomeOf(mongo_db, last=slow["_id"]), True
            with pytest.raises(SimulatedCrash):
                submit_from_store(server, mongo_db, [older, slow], log, api)
    assert others[0].state_counts == {"in_flight": 1}  # left to the run that was killed
    (current,) = [c for c in sandbox.state.conditions.values() if not c["voided"]]
    sent = "Severity: Severe" in current["additionalDetail"]
    assert sent or original["_id"] in log.retryable_keys(NOW, 30), "the newer content is lost"
