"""Ctrl-C and SIGTERM during a submission stop it at once, cleanly, and are not retried."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from tm2_pipeline import submission_run
from tm2_pipeline.openmrs.interrupts import stopped_by_interrupts
from tm2_pipeline.openmrs.states import SubmissionState
from tm2_pipeline.resources.mongo import MongoResource
from tm2_pipeline.resources.openmrs import OpenMRSResource
from tm2_pipeline_tests.openmrs_sample_records import sample_records


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_cancels_the_submission_then_raises_keyboard_interrupt(number: signal.Signals) -> None:
    handler_before = signal.getsignal(number)
    cleaned_up: list[bool] = []

    async def sending() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cleaned_up.append(True)  # requests in flight are cancelled, not left running
            raise

    threading.Timer(0.3, os.kill, (os.getpid(), number)).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt, match=f"stopped by {number.name}"):
        asyncio.run(stopped_by_interrupts(sending()))
    assert time.monotonic() - started < 5 and cleaned_up == [True]
    assert signal.getsignal(number) is handler_before  # Dagster's (or Python's) handler is back


def test_a_submission_that_ends_normally_returns_its_result() -> None:
    async def done() -> int:
        return 7

    assert asyncio.run(stopped_by_interrupts(done())) == 7


class InterruptedOpenMRS(OpenMRSResource):
    """Ctrl-C while it sends, as `stopped_by_interrupts` reports it."""

    def submit_batches(self, batches, log, now, store=None):
        next(iter(batches))
        raise KeyboardInterrupt("stopped by SIGINT")


@pytest.mark.integration
def test_an_interrupted_submission_fails_without_retry_and_leaves_its_records_for_later(
    tmp_path: Path, secantus_uri: str
) -> None:
    records = sample_records()[:5]
    keys = [record["_id"] for record in records]
    database = f"test_{uuid.uuid4().hex[:12]}"
    mongo = MongoResource(uri=secantus_uri, tm2_home=str(tmp_path), database_name=database)
    with mongo.process_config_and_initialize_cm() as store:
        store.records().collection.insert_many([dict(record) for record in records])
        openmrs = InterruptedOpenMRS(tm2_home=str(tmp_path))
        with pytest.raises(dg.Failure) as failed:
            submission_run.submit_stored_records(keys, mongo=store, openmrs=openmrs, now=datetime.now(UTC))
        # Dagster would retry an interrupted step under its RetryPolicy: the user said stop.
        assert not failed.value.allow_retries
        assert failed.value.description == (
            "interrupted (stopped by SIGINT): stopped sending; 5 of these records wait for a later run "
            "(the nightly retry)"
        )
        entries = store.submissions().entries_for(keys)
        assert {entry.state for entry in entries.values()} == {SubmissionState.FAILED_RETRYABLE}
