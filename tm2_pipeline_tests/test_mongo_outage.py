"""The store stops mid-run: the run fails with MongoUnavailable; after a restart a re-run completes it.

A dedicated embedded SecantusDB per test (its own data directory), stopped at a chosen point of the
write so the outcome is deterministic; the restarted server reads the same data directory.
"""

from __future__ import annotations

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
