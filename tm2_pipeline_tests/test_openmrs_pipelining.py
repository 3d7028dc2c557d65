"""The submitter's sliding window against a scripted OpenMRS (httpx.MockTransport) and an in-memory log:
batches overlap, yet no request precedes its record's write-ahead, and a run-level failure stops the
run while the outcomes of what finished are still written."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import httpx
import pytest

from tm2_pipeline.openmrs.client import OpenMRSClient
from tm2_pipeline.openmrs.client_config import ClientConfig
from tm2_pipeline.openmrs.errors import OpenMRSAccessError
from tm2_pipeline.openmrs.states import PendingSubmission, SubmissionEntry, SubmissionOutcome
from tm2_pipeline.openmrs.submitter import SubmitterOptions, submit_records
from tm2_pipeline_tests.openmrs_sample_records import make_record

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
LOGGED_IN = {"authenticated": True, "user": {"username": "clerk"}}


class MemoryLog:
    """The submission log's interface in memory; a write-ahead takes a while, as a real one does."""

    def __init__(self, mark_delay_s: float = 0.0, write_delay_s: float = 0.0) -> None:
        self.mark_delay_s, self.write_delay_s = mark_delay_s, write_delay_s
        self.marked: set[str] = set()  # condition uuids whose write-ahead has completed
        self.outcomes: dict[str, SubmissionOutcome] = {}
        self.requests_in_flight_at_mark: list[int] = []
        self.in_flight = 0  # requests the fake server is answering right now
        self.lock = threading.Lock()

    def entries_for(self, keys: Sequence[str]) -> dict[str, SubmissionEntry]:
        return {}

    def mark_in_flight(self, pending: Sequence[PendingSubmission], server: str, now: datetime) -> set[str]:
        self.requests_in_flight_at_mark.append(self.in_flight)
        time.sleep(self.mark_delay_s)
        with self.lock:
            self.marked.update(item.condition_uuid for item in pending)
        return {item.key for item in pending}

    def record_outcomes(self, outcomes: Sequence[SubmissionOutcome], now: datetime) -> None:
        time.sleep(self.write_delay_s)
        with self.lock:
            self.outcomes.update((outcome.key, outcome) for outcome in outcomes)

    def rebase(self, key: str, condition_uuid: str, now: datetime) -> None:
        raise AssertionError("no record here is a correction")

    def hold_claim(self, key: str, claim: str | None) -> bool:
        raise AssertionError("no record here is a correction")


def records_for(patients: Sequence[str], per_patient: int) -> list[dict]:
    dates = [f"2025-01-{day:02d}" for day in range(1, per_patient + 1)]
    return [make_record(patient, "SK01", day) for patient in patients for day in dates]


def client_for(handler, concurrency: int) -> OpenMRSClient:
    config = ClientConfig(
        base_url="https://emr.example.org/openmrs",
        username="clerk",
        password="s3cret-Pass",
        concurrency=concurrency,
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
    )
    return OpenMRSClient(config, transport=httpx.MockTransport(handler))


def test_batches_overlap_but_no_request_precedes_its_write_ahead() -> None:
    log = MemoryLog(mark_delay_s=0.03)
    records = records_for(["MRN-1", "MRN-2", "MRN-3"], per_patient=6)
    early_posts: list[str] = []
    most_in_flight = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal most_in_flight
        log.in_flight += 1
        most_in_flight = max(most_in_flight, log.in_flight)
        try:
            await asyncio.sleep(0.005)
            path = request.url.path
            if path.endswith("/session"):
                return httpx.Response(200, json=LOGGED_IN)
            if path.endswith("/patient"):
                return httpx.Response(
                    200, json={"results": [{"uuid": "p-" + request.url.params["identifier"]}]}
                )
            if "/conceptsource/" in path:
                return httpx.Response(404, json={"error": {"message": "no such source"}})
            uuid = json.loads(request.content)["uuid"]
            with log.lock:
                if uuid not in log.marked:
                    early_posts.append(uuid)
            return httpx.Response(201, json={"uuid": uuid})
        finally:
            log.in_flight -= 1

    async def scenario():
        async with client_for(handler, concurrency=3) as client:
            options = SubmitterOptions(batch_size=4)
            return await submit_records(records, client=client, log=log, now=NOW, options=options)

    summary = asyncio.run(scenario())
    assert summary.submitted == len(records) == len(log.outcomes)
    assert early_posts == [], "a condition was sent before its write-ahead mark was written"
    assert most_in_flight <= 3, "the client's concurrency is the bound on requests in flight"
    assert len(log.requests_in_flight_at_mark) == 5
    assert max(log.requests_in_flight_at_mark[1:]) > 0, "the next batch must be marked while one sends"


def test_a_missing_privilege_stops_the_run_and_keeps_what_finished() -> None:
    # The first outcome is being written when the others finish, and still when the refusal comes.
    log = MemoryLog(write_delay_s=0.3)
    fast = records_for(["MRN-OK"], per_patient=5)
    refused = records_for(["MRN-403"], per_patient=1)
    slow = records_for(["MRN-SLOW"], per_patient=3)
    created: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/session"):
            return httpx.Response(200, json=LOGGED_IN)
        if "/conceptsource/" in path:
            return httpx.Response(404, json={"error": {"message": "no such source"}})
        if path.endswith("/patient"):
            identifier = request.url.params["identifier"]
            if identifier == "MRN-403":
                await asyncio.sleep(0.1)  # the others finish first
                return httpx.Response(403, json={"error": {"message": "no privilege [Get Patients]"}})
            if identifier == "MRN-SLOW":
                await asyncio.sleep(1.0)  # still unanswered when the run stops
            return httpx.Response(200, json={"results": [{"uuid": "p-" + identifier}]})
        payload = json.loads(request.content)
        if payload["onsetDate"] != "2025-01-01":
            await asyncio.sleep(0.05)
        uuid = payload["uuid"]
        created.append(uuid)
        return httpx.Response(201, json={"uuid": uuid})

    async def scenario() -> None:
        async with client_for(handler, concurrency=8) as client:
            await submit_records(fast + refused + slow, client=client, log=log, now=NOW)

    with pytest.raises(OpenMRSAccessError):
        asyncio.run(scenario())
    assert len(created) == len(fast), "nothing is sent after the refusal"
    assert set(log.outcomes) == {record["_id"] for record in fast}, "every finished record is logged"
    assert len(log.marked) == len(fast + refused + slow), "the rest stays marked in_flight"
