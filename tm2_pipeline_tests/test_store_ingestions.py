"""IngestionLedger against the real SecantusDB server: stage outcomes merge; latest and recent ordering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from bson.codec_options import CodecOptions

from tm2_pipeline.store.ingestions import IngestionLedger

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
SHA_A, SHA_B = "a" * 64, "b" * 64

pytestmark = pytest.mark.integration


@pytest.fixture
def ledger(mongo_db) -> IngestionLedger:
    return IngestionLedger(mongo_db.with_options(codec_options=CodecOptions(tz_aware=True, tzinfo=UTC)))


def test_each_stage_adds_its_counts_to_one_document(ledger):
    ledger.record_outcome(file="a.csv", sha256=SHA_A, status="validated", at=T0, size=1234, run_id="r1",
                          counts={"rows": 10, "accepted": 8, "duplicates": 1, "rejected": 1})  # fmt: skip
    ledger.record_outcome(file="a.csv", sha256=SHA_A, status="stored", at=T0 + timedelta(seconds=5),
                          counts={"inserted": 8, "updated": 0, "unchanged": 0}, run_id="r1")  # fmt: skip
    latest = ledger.latest_for_file("a.csv")
    assert latest["_id"] == f"a.csv:{SHA_A}"
    assert latest["status"] == "stored" and latest["size"] == 1234 and latest["run_id"] == "r1"
    assert latest["counts"] == {"rows": 10, "accepted": 8, "duplicates": 1, "rejected": 1,
                                "inserted": 8, "updated": 0, "unchanged": 0}  # fmt: skip
    assert latest["at"] == T0 + timedelta(seconds=5)
    assert latest["error"] is None


def test_re_ingesting_updates_time_status_and_counts_in_place(ledger):
    ledger.record_outcome(file="a.csv", sha256=SHA_A, status="stored", at=T0, counts={"inserted": 8})
    ledger.record_outcome(file="a.csv", sha256=SHA_A, status="failed", at=T0 + timedelta(hours=1),
                          counts={"inserted": 0}, error="cannot reach MongoDB at 127.0.0.1:1",
                          run_id="r2")  # fmt: skip
    assert ledger.collection.count_documents({}) == 1
    latest = ledger.latest_for_file("a.csv")
    assert (latest["status"], latest["counts"], latest["run_id"]) == ("failed", {"inserted": 0}, "r2")
    assert latest["error"] == "cannot reach MongoDB at 127.0.0.1:1"
    assert latest["at"] == T0 + timedelta(hours=1)


def test_latest_for_file_is_the_newest_content_of_that_name(ledger):
    ledger.record_outcome(file="a.csv", sha256=SHA_A, status="succeeded", at=T0)
    ledger.record_outcome(file="a.csv", sha256=SHA_B, status="blocked", at=T0 + timedelta(days=1))
    ledger.record_outcome(file="other.csv", sha256=SHA_A, status="refused", at=T0 + timedelta(days=2))
    assert ledger.latest_for_file("a.csv")["sha256"] == SHA_B
    assert ledger.latest_for_file("a.csv")["counts"] == {}
    assert ledger.latest_for_file("missing.csv") is None


def test_recent_lists_newest_first_up_to_the_limit(ledger):
    for day in range(5):
        ledger.record_outcome(
            file=f"f{day}.csv", sha256=SHA_A, status="succeeded", at=T0 + timedelta(days=day)
        )
    assert [doc["file"] for doc in ledger.recent(3)] == ["f4.csv", "f3.csv", "f2.csv"]
    assert len(ledger.recent()) == 5


def test_unknown_counts_and_statuses_are_refused(ledger):
    with pytest.raises(ValueError, match="unknown ingestion count"):
        ledger.record_outcome(file="a.csv", sha256=SHA_A, status="stored", at=T0, counts={"insertd": 1})
    with pytest.raises(ValueError, match="is not a valid IngestionStatus"):
        ledger.record_outcome(file="a.csv", sha256=SHA_A, status="done", at=T0)
    assert ledger.collection.count_documents({}) == 0


def test_an_outcome_for_a_run_is_written_only_while_the_entry_is_that_runs(ledger):
    # The nightly retry records what it sent for a run whose process died: not over a later run's.
    ledger.record_outcome(
        file="a.csv", sha256=SHA_A, status="stored", at=T0, counts={"inserted": 8}, run_id="r1"
    )
    later = T0 + timedelta(hours=2)
    sent = {"submitted": 8, "in_openmrs": 8}
    assert ledger.record_outcome_of_run(
        "r1", file="a.csv", sha256=SHA_A, status="succeeded", counts=sent, at=later
    )
    entry = ledger.entry("a.csv", SHA_A)
    assert (entry["status"], entry["counts"], entry["at"]) == ("succeeded", {"inserted": 8, **sent}, later)
    ledger.record_outcome(file="a.csv", sha256=SHA_A, status="validated", at=later, run_id="r2")
    assert not ledger.record_outcome_of_run(
        "r1", file="a.csv", sha256=SHA_A, status="succeeded", counts={}, at=later
    )
    assert not ledger.record_outcome_of_run(
        "r1", file="b.csv", sha256=SHA_B, status="succeeded", counts={}, at=later
    )
    assert ledger.entry("a.csv", SHA_A)["status"] == "validated" and ledger.entry("b.csv", SHA_B) is None
    with pytest.raises(ValueError, match="unknown ingestion count"):
        ledger.record_outcome_of_run(
            "r2", file="a.csv", sha256=SHA_A, status="stored", counts={"x": 1}, at=T0
        )
