"""The store stops mid-run: the run fails with MongoUnavailable; after a restart a re-run completes it.

A dedicated embedded SecantusDB per test (its own data directory), stopped at a chosen point of the
write so the outcome is deterministic; the restarted server reads the same data directory.
"""

from __future__ import annotations

import os
import signal
import threading
from datetime import UTC, datetime

import pytest

from tm2_pipeline.embedded.secantus import EmbeddedSecantus
from tm2_pipeline.resources.mongo import MongoResource, MongoUnavailable
from tm2_pipeline.store.records import RecordStore, StoreCounts
from tm2_pipeline_tests.accepted_frames import accepted_frame

pytestmark = pytest.mark.integration

N, BATCH = 10, 4
SHA = "f" * 64


class StoppingRecordStore(RecordStore):
    """Stops the server after the resource batch, or halfway through the second batch's insert."""

    def __init__(self, db, server: EmbeddedSecantus, *, halfway: bool, **kwargs) -> None:
        super().__init__(db, **kwargs)
        self.server, self.halfway, self.batches = server, halfway, 0

    def _store_batch(self, batch):
        self.batches += 1
        counts = super()._store_batch(batch)
        if not self.halfway:
            self.server.stop()
        return counts

    def _insert(self, documents):
        if self.halfway and self.batches == 2:
            self.collection.insert_many(documents[: len(documents) // 2])  # acknowledged, then the outage
            self.server.stop()
        return super()._insert(documents)


@pytest.fixture
def server(tmp_path):
    embedded = EmbeddedSecantus(tmp_path)
    yield embedded
    embedded.stop()


def resource_for(home) -> MongoResource:
    return MongoResource(tm2_home=str(home), batch_size=BATCH, server_selection_timeout_ms=1000)


@pytest.mark.parametrize(("halfway", "stored_before_outage"), [(False, BATCH), (True, BATCH + BATCH // 2)])
def test_a_rerun_after_an_outage_completes_the_file_exactly_once(
    server, tmp_path, halfway, stored_before_outage
):
    frame = accepted_frame(N)
    resource = resource_for(tmp_path)
    port = server.ensure_running().port
    store = StoppingRecordStore(
        resource.database(), server, halfway=halfway, batch_size=BATCH, target=resource.target
    )
    with pytest.raises(MongoUnavailable, match=rf"^cannot reach MongoDB at 127\.0\.0\.1:{port} "):
        store.store(frame, file_name="a.csv", sha256=SHA, now=datetime(2025, 3, 1, tzinfo=UTC))
    assert server.status() is None

    # The same resource instance (as in a step retry): the embedded server starts again on the same
    # data directory, on a new port, and the resource reconnects to it.
    records = resource.records()
    assert server.status() is not None and resource.target == f"127.0.0.1:{server.status().port}"
    assert records.count() == stored_before_outage  # what was acknowledged survived the stop

    counts = records.store(frame, file_name="a.csv", sha256=SHA, now=datetime(2025, 3, 2, tzinfo=UTC))
    assert counts == StoreCounts(inserted=N - stored_before_outage, updated=0, unchanged=stored_before_outage)
    assert counts.total == N

    stored = {doc["_id"]: doc for doc in records.collection.find()}
    assert records.count() == len(stored) == N
    for row in frame.to_dict("records"):
        document = stored[row["record_key"]]
        assert document["content_hash"] == row["content_hash"]
        assert document["severity"] == row["severity"]
        assert document["source"] == {"file": "a.csv", "sha256": SHA, "row": row["source_row"]}
    resource.close()


def test_a_server_that_stops_answering_fails_the_run_instead_of_holding_it(server, tmp_path):
    # A stopped process: its port still accepts connections (the kernel's backlog), nothing answers.
    # pymongo's monitor would notice that within seconds and cut the operation; here it looks once
    # an hour, as it cannot see a node that answers its checks and hangs on a write (an unbounded
    # w=majority wait with the secondaries gone): only the socket timeout ends that.
    uri = f"{server.ensure_running().uri}&heartbeatFrequencyMS=3600000"
    resource = MongoResource(
        uri=uri, tm2_home=str(tmp_path), server_selection_timeout_ms=1000, socket_timeout_ms=1000
    )
    records = resource.records()
    assert records.count() == 0
    info = server.status()
    outcome: list[BaseException | int] = []

    def count() -> None:
        try:
            outcome.append(records.count())
        except BaseException as error:  # handed to the test's thread
            outcome.append(error)

    os.kill(info.pid, signal.SIGSTOP)
    try:
        counting = threading.Thread(target=count, daemon=True)
        counting.start()
        counting.join(timeout=90)  # without a socket timeout pymongo waits for ever
        assert not counting.is_alive(), "the operation still waits on a server that never answers"
    finally:
        os.kill(info.pid, signal.SIGCONT)
    [error] = outcome
    assert isinstance(error, MongoUnavailable)
    assert str(error).startswith(f"cannot reach MongoDB at 127.0.0.1:{info.port} ")
