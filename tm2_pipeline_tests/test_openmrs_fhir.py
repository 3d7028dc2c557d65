"""Exactly-once submission through FHIR2's Condition (OPENMRS_API=fhir): the emulator over real HTTP,
the submission log on SecantusDB. FHIR2 ignores a client id, so these are the cases where a second
copy could be made: a lost answer, a lost log, two runs at once, faults, a late write."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from pymongo.database import Database

from tm2_pipeline.identity import condition_uuid
from tm2_pipeline.openmrs.emulator.faults import FaultConfig
from tm2_pipeline.openmrs.emulator.server import Sandbox, SandboxServer, open_sandbox
from tm2_pipeline.openmrs.errors import TransientOpenMRSError
from tm2_pipeline.openmrs.fhir_payloads import REFERENCE_LABEL
from tm2_pipeline.openmrs.states import SubmissionState
from tm2_pipeline.store import submissions
from tm2_pipeline.store.submissions import SubmissionLog
from tm2_pipeline_tests.openmrs_sample_records import make_record, sample_records, with_changes
from tm2_pipeline_tests.test_openmrs_exactly_once import (
    NOW,
    CrashingLog,
    SimulatedCrash,
    expected_outcomes,
    slow_writes,
    submit,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    with open_sandbox(None) as sandbox, SandboxServer(sandbox) as running:
        yield running


def fhir(server: SandboxServer, records, log: SubmissionLog, now=NOW, **overrides):
    return submit(server, records, log, now, api="fhir", **overrides)


def live_conditions(server: SandboxServer) -> list[dict]:
    return [c for c in server.sandbox.state.conditions.values() if not c["voided"]]


def record_of(condition: dict) -> str:
    """The record uuid a condition's note names (or its own uuid: created over REST)."""
    detail = condition.get("additionalDetail") or ""
    return detail.rsplit(f"{REFERENCE_LABEL} ", 1)[1] if REFERENCE_LABEL in detail else condition["uuid"]


def assert_each_record_in_openmrs_once(server: SandboxServer, records, log: SubmissionLog) -> int:
    expected = expected_outcomes(server, records)
    wanted = {
        condition_uuid(key): key for key, state in expected.items() if state is SubmissionState.SUBMITTED
    }
    live = live_conditions(server)
    assert Counter(record_of(c) for c in live) == Counter(wanted.keys()), (
        "missing, extra or doubled conditions"
    )
    by_record = {record_of(c): c["uuid"] for c in live}
    entries = log.entries_for([record["_id"] for record in records])
    for key, state in expected.items():
        if state is SubmissionState.SUBMITTED:
            entry = entries[key]
            assert entry.state in (SubmissionState.SUBMITTED, SubmissionState.ALREADY_PRESENT)
            assert entry.confirmed_hash is not None
            assert entry.condition_uuid == by_record[condition_uuid(key)]
        else:
            assert entries[key].state is state
    return len(wanted)


def crashed_fhir_run(server: SandboxServer, records, mongo_db: Database) -> int:
    """A FHIR run that dies after OpenMRS answered, before the log heard: how many it created."""
    with pytest.raises(SimulatedCrash):
        fhir(server, records, CrashingLog(mongo_db))
    created = len(live_conditions(server))
    assert created > 0
    return created


def test_the_sample_reaches_openmrs_once_and_a_rerun_sends_nothing(
    server: SandboxServer, mongo_db: Database
) -> None:
    records, log = sample_records(), SubmissionLog(mongo_db)
    summary = fhir(server, records, log)
    created = assert_each_record_in_openmrs_once(server, records, log)
    assert summary.submitted == created == summary.requests["POST"] > 0
    # FHIR2 assigned the ids: none is the record's own uuid.
    assert not {c["uuid"] for c in live_conditions(server)} & {condition_uuid(r["_id"]) for r in records}

    again = fhir(server, records, log, now=NOW + timedelta(minutes=5))
    assert again.submitted == 0 and "POST" not in again.requests and "PUT" not in again.requests


def test_a_crash_between_post_and_log_update_creates_nothing_twice(
    server: SandboxServer, mongo_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = sample_records()[:40]
    created_before = crashed_fhir_run(server, records, mongo_db)

    # Within the crashed run's lease another run leaves its records alone: it cannot tell a dead run
    # from a slow one, and two runs creating one record would make two conditions.
    waiting = fhir(server, records, SubmissionLog(mongo_db), now=NOW + timedelta(minutes=1))
    assert set(waiting.requests) == {"GET"} and waiting.state_counts == {"in_flight": len(records)}

    monkeypatch.setattr(submissions, "CLAIM_LEASE", timedelta(0))  # the lease has run out
    log = SubmissionLog(mongo_db)
    summary = fhir(server, records, log, now=NOW + timedelta(minutes=5))
    assert "POST" not in summary.requests and summary.state_counts["already_present"] == created_before
    assert assert_each_record_in_openmrs_once(server, records, log) == created_before


def test_a_lost_log_creates_nothing_twice(server: SandboxServer, mongo_db: Database) -> None:
    records = sample_records()[:40]
    other = mongo_db.client[mongo_db.name + "_lost"]
    try:
        fhir(server, records, SubmissionLog(other))
    finally:
        mongo_db.client.drop_database(other.name)
    log = SubmissionLog(mongo_db)  # a new database: the log knows nothing
    summary = fhir(server, records, log)
    assert "POST" not in summary.requests and summary.submitted == 0
    assert_each_record_in_openmrs_once(server, records, log)


def test_conditions_created_over_rest_are_found_by_their_uuid(
    server: SandboxServer, mongo_db: Database
) -> None:
    records = sample_records()[:40]
    other = mongo_db.client[mongo_db.name + "_rest"]
    try:
        submit(server, records, SubmissionLog(other))  # the REST API, with the records' own uuids
    finally:
        mongo_db.client.drop_database(other.name)
    summary = fhir(server, records, SubmissionLog(mongo_db))
    assert "POST" not in summary.requests and "PUT" not in summary.requests
    assert summary.state_counts["already_present"] == len(live_conditions(server))


def test_a_corrected_severity_updates_the_condition_in_place(
    server: SandboxServer, mongo_db: Database
) -> None:
    log = SubmissionLog(mongo_db)
    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    fhir(server, [record], log)
    (created,) = live_conditions(server)

    corrected = with_changes(record, severity="Severe")
    summary = fhir(server, [corrected], log, now=NOW + timedelta(days=1))
    assert (summary.corrected, summary.requests.get("PUT"), summary.requests.get("POST", 0)) == (1, 1, 0)
    (current,) = live_conditions(server)
    assert current["uuid"] == created["uuid"] and "Severity: Severe" in current["additionalDetail"]
    assert len(server.sandbox.state.conditions) == 1
    entry = log.entries_for([record["_id"]])[record["_id"]]
    assert (entry.condition_uuid, entry.confirmed_hash) == (created["uuid"], corrected["content_hash"])

    again = fhir(server, [corrected], log, now=NOW + timedelta(days=2))
    assert again.corrected == 0 and "PUT" not in again.requests


def test_statuses_a_clinician_changed_in_openmrs_are_kept(server: SandboxServer, mongo_db: Database) -> None:
    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    log = SubmissionLog(mongo_db)
    fhir(server, [record], log)
    state = server.sandbox.state
    (created,) = live_conditions(server)
    state.revise_condition(created, {"clinicalStatus": "INACTIVE"})

    lost = mongo_db.client[mongo_db.name + "_lost"]
    try:
        summary = fhir(server, [record], SubmissionLog(lost))  # a lost log: found as it is
    finally:
        mongo_db.client.drop_database(lost.name)
    assert summary.state_counts == {"already_present": 1} and "PUT" not in summary.requests
    summary = fhir(server, [with_changes(record, severity="Severe")], log, NOW + timedelta(days=1))
    assert summary.corrected == 1
    (current,) = live_conditions(server)
    assert current["clinicalStatus"] == "INACTIVE" and "Severity: Severe" in current["additionalDetail"]


def test_two_runs_at_once_create_each_condition_once(server: SandboxServer, mongo_db: Database) -> None:
    records = sample_records()[:60]
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(fhir, server, records, SubmissionLog(mongo_db)) for _ in range(2)]
        summaries = [run.result() for run in runs]
    created = sum(summary.submitted for summary in summaries)
    log = SubmissionLog(mongo_db)
    assert created == assert_each_record_in_openmrs_once(server, records, log)


def test_repeated_runs_through_30_percent_faults_converge_to_exactly_once(
    mongo_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A write in doubt is left alone longer than the emulator's late writes take (hang_s).
    monkeypatch.setattr(submissions, "CLAIM_LEASE", timedelta(seconds=1.5))
    records, log = sample_records(), SubmissionLog(mongo_db)
    faults = FaultConfig.spread(0.3, hang_s=1.0, seed=20251124)
    with open_sandbox(None, faults=faults) as sandbox, SandboxServer(sandbox) as server:
        runs, deadline = [], time.monotonic() + 120  # a record in doubt waits out the lease: time, not runs
        for run in range(1000):
            if run and time.monotonic() > deadline:
                break
            time.sleep(0.3 if run else 0)
            try:
                summary = fhir(
                    server, records, log, now=NOW + timedelta(minutes=run), read_timeout_s=0.5, max_attempts=4
                )
            except TransientOpenMRSError:
                continue  # the login itself met four faults in a row: that run fails, the next goes on
            runs.append(summary)
            if summary.failed == 0:
                break
        assert runs[-1].failed == 0, f"did not converge: {[s.state_counts for s in runs]}"
        assert {"drop", "timeout", "lost_response", "error_500"} <= set(sandbox.faults.injected)
        assert_each_record_in_openmrs_once(server, records, log)


def slow_creates(app, posts: Counter, delay_s: float):
    """FHIR2 busy with every create (`POST /Condition`), counted under "POST"."""

    def create(scope) -> str | None:
        return "POST" if scope["method"] == "POST" and scope["path"].endswith("/Condition") else None

    return slow_writes(app, posts, delay_s, create)


def test_a_create_that_timed_out_is_not_posted_again_until_it_has_landed(
    mongo_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    posts: Counter = Counter()
    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    log = SubmissionLog(mongo_db)
    with open_sandbox(None) as sandbox:
        slow = Sandbox(state=sandbox.state, app=slow_creates(sandbox.app, posts, 1.0), faults=None)
        with SandboxServer(slow) as server:
            summary = fhir(server, [record], log, read_timeout_s=0.3)
            assert summary.state_counts == {"failed_retryable": 1} and posts["POST"] == 1
            # A run right after leaves it alone: its search would miss the condition being written.
            summary = fhir(server, [record], SubmissionLog(mongo_db), NOW + timedelta(minutes=1))
            assert summary.state_counts == {"in_flight": 1} and set(summary.requests) == {"GET"}
            time.sleep(1.2)  # the late condition lands
            assert len(live_conditions(server)) == 1

            monkeypatch.setattr(submissions, "CLAIM_LEASE", timedelta(0))  # the window has passed
            summary = fhir(server, [record], log, NOW + timedelta(days=1))
            assert summary.state_counts == {"already_present": 1} and posts["POST"] == 1
            assert_each_record_in_openmrs_once(server, [record], log)


def test_a_search_reads_every_page_at_the_configured_server(server: SandboxServer) -> None:
    import asyncio

    from tm2_pipeline.openmrs.client import OpenMRSClient
    from tm2_pipeline.openmrs.fhir_client import FhirConditions
    from tm2_pipeline_tests.test_openmrs_exactly_once import config_for

    state = server.sandbox.state
    patient = state.find_patients("MRN-01001")[0]["uuid"]
    for n in range(23):
        state.create_condition(
            {
                "patient": patient,
                "nonCoded": f"entry {n}",
                "clinicalStatus": "ACTIVE",
                "onsetDate": "2024-01-15",
            }
        )
    # A day either side is searched too (FHIR2 compares days in its own time zone); two days is not.
    for text, day in (("next day", "2024-01-16"), ("two days later", "2024-01-17")):
        state.create_condition(
            {"patient": patient, "nonCoded": text, "clinicalStatus": "ACTIVE", "onsetDate": day}
        )

    async def search() -> list[dict]:
        async with OpenMRSClient(config_for(server, page_limit=10, api="fhir")) as client:
            return await FhirConditions(client).search(patient, "2024-01-15")

    found = asyncio.run(search())
    assert sorted(resource["extension"][0]["valueString"] for resource in found) == sorted(
        [f"entry {n}" for n in range(23)] + ["next day"]
    )

    # A gateway's OpenMRS builds its links from the address it was reached at inside.
    async def next_page() -> str | None:
        async with OpenMRSClient(config_for(server, api="fhir")) as client:
            inside = {
                "link": [
                    {
                        "relation": "next",
                        "url": "http://10.0.0.7:8080/openmrs/ws/fhir2/R4?_getpages=a&_count=10",
                    }
                ]
            }
            return FhirConditions(client)._next_page(inside)

    assert asyncio.run(next_page()) == f"{server.base_url}/ws/fhir2/R4?_getpages=a&_count=10"


def test_a_put_whose_answer_was_lost_lands_before_any_newer_content(
    mongo_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    def update(scope) -> str | None:
        return "PUT" if scope["method"] == "PUT" and slowed["on"] else None

    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    moderate, severe = with_changes(record, severity="Moderate"), with_changes(record, severity="Severe")
    posts: Counter = Counter()
    slowed = {"on": False}
    log = SubmissionLog(mongo_db)
    with open_sandbox(None) as sandbox:
        slow = Sandbox(state=sandbox.state, app=slow_writes(sandbox.app, posts, 1.0, update), faults=None)
        with SandboxServer(slow) as server:
            fhir(server, [record], log)
            slowed["on"] = True
            first = fhir(server, [moderate], log, NOW + timedelta(days=1), read_timeout_s=0.3)
            assert first.state_counts == {"failed_retryable": 1} and posts["PUT"] == 1
            slowed["on"] = False
            # Another run with newer content leaves it alone until the late PUT has landed.
            waiting = fhir(server, [severe], SubmissionLog(mongo_db), NOW + timedelta(days=2))
            assert waiting.state_counts == {"in_flight": 1} and "PUT" not in waiting.requests
            time.sleep(1.2)
            monkeypatch.setattr(submissions, "CLAIM_LEASE", timedelta(0))
            later = fhir(server, [severe], SubmissionLog(mongo_db), NOW + timedelta(days=3))
            assert later.corrected == 1
    (current,) = live_conditions(server)
    assert "Severity: Severe" in current["additionalDetail"]


def test_a_condition_voided_between_the_read_and_the_put_is_not_logged_as_confirmed(
    mongo_db: Database,
) -> None:
    """FHIR2 answers 200 to a PUT of a voided condition (and changes the voided row): the read after
    the PUT is what tells that the record is not in OpenMRS."""
    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    log = SubmissionLog(mongo_db)
    with open_sandbox(None) as sandbox:
        state = sandbox.state

        async def clinician_voids_first(scope, receive, send):
            if scope["type"] == "http" and scope["method"] == "PUT":
                condition_id = scope["path"].rsplit("/", 1)[1]
                state.void_condition(state.conditions[condition_id], "entered in error")
            await sandbox.app(scope, receive, send)

        voiding = Sandbox(state=state, app=clinician_voids_first, faults=None)
        with SandboxServer(voiding) as server:
            fhir(server, [record], log)
            assert len(live_conditions(server)) == 1
            summary = fhir(server, [with_changes(record, severity="Severe")], log, NOW + timedelta(days=1))
    assert summary.requests["PUT"] == 1 and summary.corrected == 0
    assert summary.state_counts == {"rejected_by_server": 1} and not live_conditions(server)
    entry = log.entries_for([record["_id"]])[record["_id"]]
    assert entry.state is SubmissionState.REJECTED_BY_SERVER
    assert entry.confirmed_hash == record["content_hash"]  # what OpenMRS last showed, not the update
    assert "voided in OpenMRS while it was updated" in entry.attempts[-1].message


def test_a_condition_edited_in_the_rest_ui_between_the_read_and_the_put_gets_the_update(
    mongo_db: Database,
) -> None:
    """The REST UI's edit voids the condition and makes a new version (note copied); FHIR2 answers 200
    to the PUT of the voided one. The read-back sees it voided, and the new version is updated."""
    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    log = SubmissionLog(mongo_db)
    with open_sandbox(None) as sandbox:
        state, edited = sandbox.state, []

        async def clinician_edits_first(scope, receive, send):
            if scope["type"] == "http" and scope["method"] == "PUT" and not edited:
                condition_id = scope["path"].rsplit("/", 1)[1]
                changes = {"verificationStatus": "PROVISIONAL"}
                edited.append(state.update_condition(state.conditions[condition_id], changes))
            await sandbox.app(scope, receive, send)

        with SandboxServer(Sandbox(state=state, app=clinician_edits_first, faults=None)) as server:
            fhir(server, [record], log)
            summary = fhir(server, [with_changes(record, severity="Severe")], log, NOW + timedelta(days=1))
    assert summary.corrected == 1 and summary.requests["PUT"] == 2
    (current,) = live_conditions(server)
    assert current["uuid"] == edited[0]["uuid"] and "Severity: Severe" in current["additionalDetail"]
    assert current["verificationStatus"] == "PROVISIONAL"  # the clinician's edit kept
    entry = log.entries_for([record["_id"]])[record["_id"]]
    assert (entry.state, entry.condition_uuid) == (SubmissionState.SUBMITTED, current["uuid"])


def test_a_condition_the_rest_api_wrote_and_a_clinician_edited_is_corrected_not_copied(
    server: SandboxServer, mongo_db: Database
) -> None:
    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    log = SubmissionLog(mongo_db)
    submit(server, [record], log)  # the REST API: the record's uuid, no reference in the note
    state = server.sandbox.state
    edited = state.update_condition(
        state.conditions[condition_uuid(record["_id"])], {"verificationStatus": "PROVISIONAL"}
    )
    assert edited["uuid"] != condition_uuid(record["_id"])  # the REST UI made a new version

    summary = fhir(server, [with_changes(record, severity="Severe")], log, NOW + timedelta(days=1))
    assert summary.corrected == 1 and "POST" not in summary.requests
    (current,) = live_conditions(server)
    assert current["uuid"] == edited["uuid"] and "Severity: Severe" in current["additionalDetail"]

    # The log lost: the search still finds it by what its note says (code, system) and its day.
    lost = mongo_db.client[mongo_db.name + "_lost"]
    try:
        summary = fhir(server, [with_changes(record, severity="Moderate")], SubmissionLog(lost))
    finally:
        mongo_db.client.drop_database(lost.name)
    assert summary.corrected == 1 and "POST" not in summary.requests and len(live_conditions(server)) == 1


def test_a_search_page_the_server_forgot_is_searched_again(mongo_db: Database) -> None:
    from tm2_pipeline.openmrs.emulator.representations import operation_outcome

    forgotten = {"left": 1}

    def forgets_a_search(app):
        async def middleware(scope, receive, send):
            if (
                scope["type"] == "http"
                and b"_getpages=" in scope.get("query_string", b"")
                and forgotten["left"]
            ):
                forgotten["left"] -= 1
                gone = operation_outcome(410, 'Search ID "x" does not exist and may have expired')
                return await gone(scope, receive, send)
            await app(scope, receive, send)

        return middleware

    record = make_record("MRN-01001", "SK01", "2024-01-15", "Ayurveda", "Mild")
    with open_sandbox(None) as sandbox:
        patient = sandbox.state.find_patients("MRN-01001")[0]["uuid"]
        for n in range(12):  # more of the patient's conditions that day than one page holds
            condition = {"patient": patient, "nonCoded": f"other {n}", "clinicalStatus": "ACTIVE"}
            sandbox.state.create_condition({**condition, "onsetDate": "2024-01-15"})
        with SandboxServer(
            Sandbox(state=sandbox.state, app=forgets_a_search(sandbox.app), faults=None)
        ) as server:
            summary = fhir(server, [record], SubmissionLog(mongo_db), page_limit=10)
    assert summary.state_counts == {"submitted": 1} and forgotten["left"] == 0


def test_records_a_fhir_run_left_unsettled_are_finished_over_fhir_after_a_switch_to_rest(
    server: SandboxServer, mongo_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = sample_records()[:40]
    created = crashed_fhir_run(server, records, mongo_db)

    # OPENMRS_API back to rest (or a tm2 ingest with another .env): over REST these would be looked
    # for by the record's uuid, which FHIR2 did not keep, and created again.
    monkeypatch.setattr(submissions, "CLAIM_LEASE", timedelta(0))
    log = SubmissionLog(mongo_db)
    summary = submit(server, records, log, NOW + timedelta(minutes=5))
    assert "POST" not in summary.requests and summary.state_counts["already_present"] == created
    assert assert_each_record_in_openmrs_once(server, records, log) == created
    entries = log.entries_for([record["_id"] for record in records]).values()
    assert {entry.api for entry in entries} == {"fhir"}

    # Settled, they follow the setting again: a correction goes over REST.
    record = next(
        r for r in records if log.entries_for([r["_id"]])[r["_id"]].state is SubmissionState.ALREADY_PRESENT
    )
    summary = submit(server, [with_changes(record, severity="Severe")], log, NOW + timedelta(days=1))
    assert summary.corrected == 1 and "PUT" not in summary.requests
    assert log.entries_for([record["_id"]])[record["_id"]].api == "rest"
