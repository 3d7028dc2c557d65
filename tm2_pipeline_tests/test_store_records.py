"""RecordStore against the real SecantusDB server: exact counts, idempotence, additive files, races."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from bson.codec_options import CodecOptions
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from tm2_pipeline.identity import KEY_VERSION
from tm2_pipeline.store.errors import MongoRefused, MongoUnavailable, RecordFrameError
from tm2_pipeline.store.lookups import SECANTUS_LOOKUP_KEYS
from tm2_pipeline.store.records import RecordStore, StoreCounts, record_documents
from tm2_pipeline.store.store_turns import LEASE_S, RENEW_AFTER_S, TURN_ID, StoreTurnLost, StoreTurns
from tm2_pipeline_tests.accepted_frames import accepted_frame, with_severity
from tm2_pipeline_tests.store_turn_helpers import FakeClock, wait_until_in_line

T0 = datetime(2025, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
T1 = T0 + timedelta(days=1)
SHA_A, SHA_B = "a" * 64, "b" * 64


@pytest.fixture
def db(mongo_db):
    """The test database read as the resource's client reads it: timezone-aware UTC datetimes."""
    return mongo_db.with_options(codec_options=CodecOptions(tz_aware=True, tzinfo=UTC))


def dump(store: RecordStore) -> list[dict]:
    return list(store.collection.find().sort("_id", 1))


# --- document building (pure, no server) ---


def test_documents_have_the_agreed_shape():
    frame = accepted_frame(3)
    documents = list(record_documents(frame, file_name="a.csv", sha256=SHA_A, now=T0))
    first = documents[0]
    assert list(first) == [
        "_id", "patient_id", "tm2_code", "diagnosis_date", "system_type", "severity", "practitioner_id",
        "condition_name", "namaste_code", "who_title", "who_block", "icd_release", "key_version",
        "content_hash", "source", "first_seen_at", "updated_at", "schema_version",
    ]  # fmt: skip
    assert first["_id"] == frame.loc[0, "record_key"]
    assert first["diagnosis_date"] == frame.loc[0, "diagnosis_date"]
    assert first["source"] == {"file": "a.csv", "sha256": SHA_A, "row": int(frame.loc[0, "source_row"])}
    assert type(first["source"]["row"]) is int  # not numpy.int64: BSON cannot encode that
    assert first["key_version"] == KEY_VERSION and first["schema_version"] == 1
    # BSON keeps milliseconds: the in-memory stamp is what a read returns.
    assert first["first_seen_at"] == first["updated_at"] == T0.replace(microsecond=123000)


def test_missing_values_become_none_whatever_their_pandas_spelling():
    frame = accepted_frame(3)
    frame["severity"] = pd.array(["mild", pd.NA, "severe"], dtype="string")
    frame["namaste_code"] = ["N1", np.nan, None]
    documents = list(record_documents(frame, file_name="a.csv", sha256=SHA_A, now=T0))
    assert [doc["severity"] for doc in documents] == ["mild", None, "severe"]
    assert [doc["namaste_code"] for doc in documents] == ["N1", None, None]


def test_a_frame_without_the_agreed_columns_is_refused():
    frame = accepted_frame(2).drop(columns=["content_hash", "who_block"])
    with pytest.raises(RecordFrameError, match="who_block, content_hash"):
        list(record_documents(frame, file_name="a.csv", sha256=SHA_A, now=T0))


def test_dates_as_datetimes_are_refused():
    frame = accepted_frame(2)
    frame["diagnosis_date"] = pd.to_datetime(frame["diagnosis_date"])
    with pytest.raises(RecordFrameError, match="yyyy-mm-dd strings"):
        list(record_documents(frame, file_name="a.csv", sha256=SHA_A, now=T0))


def test_repeated_record_keys_are_refused():
    frame = pd.concat([accepted_frame(3), accepted_frame(1)], ignore_index=True)
    with pytest.raises(RecordFrameError, match="repeat 1 record key"):
        list(record_documents(frame, file_name="a.csv", sha256=SHA_A, now=T0))


def test_naive_timestamps_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        list(record_documents(accepted_frame(1), file_name="a.csv", sha256=SHA_A, now=datetime(2025, 1, 1)))


# --- writes (real server) ---


@pytest.mark.integration
def test_store_then_store_again_changes_nothing(db):
    store = RecordStore(db)
    frame = accepted_frame(10)
    assert store.store(frame, file_name="a.csv", sha256=SHA_A, now=T0) == StoreCounts(10, 0, 0)
    before = dump(store)
    assert len(before) == store.count() == 10
    assert before[0]["first_seen_at"] == T0.replace(microsecond=123000)

    assert store.store(frame, file_name="a.csv", sha256=SHA_A, now=T1) == StoreCounts(0, 0, 10)
    assert dump(store) == before  # every field, timestamps included


@pytest.mark.integration
def test_changed_content_updates_one_document_and_keeps_first_seen(db):
    store = RecordStore(db)
    frame = accepted_frame(10)
    store.store(frame, file_name="a.csv", sha256=SHA_A, now=T0)
    before = {doc["_id"]: doc for doc in dump(store)}

    changed = with_severity(frame, 4, "severe")
    changed["source_row"] = changed["source_row"] + 100  # the later file has the rows elsewhere
    counts = store.store(changed, file_name="b.csv", sha256=SHA_B, now=T1)
    assert counts == StoreCounts(inserted=0, updated=1, unchanged=9)

    after = {doc["_id"]: doc for doc in dump(store)}
    key = frame.loc[4, "record_key"]
    updated = after[key]
    assert updated["severity"] == "severe"
    assert updated["content_hash"] == changed.loc[4, "content_hash"] != before[key]["content_hash"]
    assert updated["source"] == {"file": "b.csv", "sha256": SHA_B, "row": int(changed.loc[4, "source_row"])}
    assert updated["first_seen_at"] == before[key]["first_seen_at"]
    assert updated["updated_at"] == T1.replace(microsecond=123000)
    assert list(updated) == list(before[key])  # field order survives the $set
    assert {k: v for k, v in after.items() if k != key} == {k: v for k, v in before.items() if k != key}


@pytest.mark.integration
def test_files_are_additive(db):
    store = RecordStore(db)
    store.store(accepted_frame(6), file_name="a.csv", sha256=SHA_A, now=T0)
    # The later file repeats records 3..5 and adds 6..7; records 0..2 are absent from it.
    counts = store.store(accepted_frame(5, first=3), file_name="b.csv", sha256=SHA_B, now=T1)
    assert counts == StoreCounts(inserted=2, updated=0, unchanged=3)
    assert store.count() == 8
    kept = store.find_by_keys(accepted_frame(3)["record_key"])
    assert [doc["source"]["file"] for doc in kept] == ["a.csv"] * 3


@pytest.mark.integration
def test_batches_read_once_each_and_count_exactly(db, monkeypatch):
    store = RecordStore(db, batch_size=3)
    probes: list[int] = []
    reads: list[int] = []
    original_probe, original_read = RecordStore._probe_finds_stored, RecordStore._existing_hashes

    def counting_probe(self, keys):
        probes.append(len(keys))
        return original_probe(self, keys)

    def counting_read(self, keys):
        reads.append(len(keys))
        return original_read(self, keys)

    monkeypatch.setattr(RecordStore, "_probe_finds_stored", counting_probe)
    monkeypatch.setattr(RecordStore, "_existing_hashes", counting_read)
    frame = accepted_frame(10)
    assert store.store(frame, file_name="a.csv", sha256=SHA_A, now=T0) == StoreCounts(10, 0, 0)
    assert (probes, reads) == ([3, 3, 3, 1], [])  # a first load inserts without reading

    probes.clear()
    changed = with_severity(with_severity(frame, 2, "severe"), 7, "severe")
    assert store.store(changed, file_name="b.csv", sha256=SHA_B, now=T1) == StoreCounts(0, 2, 8)
    assert (probes, reads) == ([3, 3, 3, 1], [3, 3, 3, 1])
    assert store.count() == 10


@pytest.mark.integration
def test_a_batch_the_probe_takes_for_new_still_counts_and_updates_exactly(db):
    store = RecordStore(db, batch_size=20, lookup_keys=1)  # the probe samples the first key only
    old = accepted_frame(10, first=10)
    store.store(old, file_name="a.csv", sha256=SHA_A, now=T0)
    before = {doc["_id"]: doc for doc in dump(store)}

    # New keys first, so the probe finds nothing; the stored ten come back as duplicate keys.
    later = pd.concat([accepted_frame(10), with_severity(old, 3, "severe")], ignore_index=True)
    counts = store.store(later, file_name="b.csv", sha256=SHA_B, now=T1)
    assert counts == StoreCounts(inserted=10, updated=1, unchanged=9)
    after = {doc["_id"]: doc for doc in dump(store)}
    assert len(after) == 20
    changed_key = old.loc[3, "record_key"]
    assert after[changed_key]["severity"] == "severe"
    assert after[changed_key]["first_seen_at"] == before[changed_key]["first_seen_at"]
    assert all(after[key] == doc for key, doc in before.items() if key != changed_key)  # untouched


class RacingRecordStore(RecordStore):
    """Another writer stores `rival` right after our `$in` read, so our insert of that key collides."""

    def __init__(self, db, rival: dict, **kwargs) -> None:
        super().__init__(db, **kwargs)
        self.rival = rival

    def _race(self, keys) -> None:
        if self.rival["_id"] in keys and not self.collection.find_one({"_id": self.rival["_id"]}):
            self.collection.insert_one(self.rival)

    def _probe_finds_stored(self, keys):
        found = super()._probe_finds_stored(keys)
        self._race(keys)
        return found

    def _existing_hashes(self, keys):
        existing = super()._existing_hashes(keys)
        self._race(keys)
        return existing


def _rival_document(frame: pd.DataFrame, position: int) -> dict:
    documents = record_documents(frame, file_name="rival.csv", sha256="c" * 64, now=T0 - timedelta(hours=1))
    return next(doc for i, doc in enumerate(documents) if i == position)


@pytest.mark.integration
@pytest.mark.parametrize("stored_before", [0, 1], ids=["after-the-probe", "after-the-read"])
def test_a_concurrent_insert_with_other_content_is_overwritten_and_counted_as_updated(db, stored_before):
    frame = accepted_frame(6)
    # A record of the batch stored beforehand makes the probe find it: the batch is then read first.
    RecordStore(db).store(frame.head(stored_before), file_name="a.csv", sha256=SHA_A, now=T0)
    rival = _rival_document(with_severity(frame, 2, "severe"), 2)
    store = RacingRecordStore(db, rival, batch_size=4)
    counts = store.store(frame, file_name="a.csv", sha256=SHA_A, now=T0)
    assert counts == StoreCounts(inserted=5 - stored_before, updated=1, unchanged=stored_before)
    assert store.count() == 6
    [stored] = store.find_by_keys([frame.loc[2, "record_key"]])
    assert stored["content_hash"] == frame.loc[2, "content_hash"]
    assert stored["severity"] == frame.loc[2, "severity"]
    assert stored["source"]["file"] == "a.csv"  # the later ingestion wins
    assert stored["first_seen_at"] == rival["first_seen_at"]  # the rival saw it first


@pytest.mark.integration
def test_a_concurrent_insert_with_the_same_content_counts_as_unchanged(db):
    frame = accepted_frame(6)
    rival = _rival_document(frame, 5)
    store = RacingRecordStore(db, rival, batch_size=4)
    counts = store.store(frame, file_name="a.csv", sha256=SHA_A, now=T0)
    assert counts == StoreCounts(inserted=5, updated=0, unchanged=1)
    [stored] = store.find_by_keys([frame.loc[5, "record_key"]])
    assert stored == rival  # untouched: same content, so nothing to write


@pytest.mark.integration
def test_find_by_keys_keeps_the_order_given_and_skips_unknown_keys(db):
    store = RecordStore(db, batch_size=2)
    frame = accepted_frame(5)
    store.store(frame, file_name="a.csv", sha256=SHA_A, now=T0)
    keys = [frame.loc[i, "record_key"] for i in (4, 0, 2)]
    found = store.find_by_keys([keys[0], "0" * 64, keys[1], keys[2], keys[0]])
    assert [doc["_id"] for doc in found] == keys
    assert store.count_keys([*keys, "0" * 64, keys[0]]) == 3


@pytest.mark.integration
def test_lookups_split_into_small_queries_on_secantus_give_the_same_answers(db):
    assert RecordStore(db).lookup_keys == SECANTUS_LOOKUP_KEYS  # the server is SecantusDB
    store = RecordStore(db, batch_size=5, lookup_keys=2)
    frame = accepted_frame(11)
    assert store.store(frame, file_name="a.csv", sha256=SHA_A, now=T0) == StoreCounts(11, 0, 0)
    changed = with_severity(frame, 9, "severe")
    assert store.store(changed, file_name="b.csv", sha256=SHA_B, now=T1) == StoreCounts(0, 1, 10)
    keys = frame["record_key"].tolist()[::-1]
    assert [doc["_id"] for doc in store.find_by_keys(keys)] == keys
    assert store.count_keys(keys) == 11


def test_the_store_generation_moves_only_when_a_record_is_written(mongo_db):
    store = RecordStore(mongo_db)
    now = datetime(2026, 1, 5, tzinfo=UTC)
    frame = accepted_frame(3)
    first = store.store(frame, file_name="a.csv", sha256="a" * 64, now=now)
    assert first.generation == store.generation() == 2  # before the first write, after the last
    again = store.store(frame, file_name="a.csv", sha256="a" * 64, now=now)
    assert (again.unchanged, again.generation, store.generation()) == (3, 2, 2)  # nothing written
    changed = with_severity(frame, 0, "Severe")
    assert store.store(changed, file_name="b.csv", sha256="b" * 64, now=now).generation == 4


def test_stores_of_two_files_take_turns_so_neither_mixes_into_the_other(mongo_db):
    """File b (a corrected re-export) shares a record with file a and reaches the store while a is
    writing. b waits for a's last batch, then lands whole: before the turns, a's second batch came
    after b's write and the shared record kept a's content while b's others kept b's."""
    frame = accepted_frame(4)
    frame_a = with_severity(frame, 3, "from-a")
    frame_b = with_severity(frame.iloc[[3]].reset_index(drop=True), 0, "from-b")
    store_a = RecordStore(mongo_db, batch_size=2)
    waits: list[str] = []
    with ThreadPoolExecutor(1) as pool:

        def a_slowly():
            yield frame_a.iloc[:2].reset_index(drop=True)
            stored_b.append(
                pool.submit(
                    RecordStore(mongo_db, batch_size=2).store,
                    frame_b, file_name="b.csv", sha256=SHA_B, now=T1, on_wait=waits.append,
                )
            )  # fmt: skip
            wait_until_in_line(mongo_db, "b.csv")
            time.sleep(0.2)  # b polls meanwhile, and waits on
            assert not stored_b[0].done()
            yield frame_a.iloc[2:].reset_index(drop=True)

        stored_b: list = []
        stored_a = store_a.store(a_slowly(), file_name="a.csv", sha256=SHA_A, now=T0)
        counts_b = stored_b[0].result(timeout=30)
    assert waits == [
        "waiting for the store of a.csv to finish (if it was stopped, its turn is taken over"
        " 2 minutes after its last sign of life)"
    ]
    (shared,) = store_a.find_by_keys([frame.loc[3, "record_key"]])
    assert shared["severity"] == "from-b" and shared["source"]["file"] == "b.csv"
    assert (counts_b.updated, counts_b.generation, stored_a.generation) == (1, 4, 2)  # both current in turn


@pytest.mark.integration
def test_a_store_whose_turn_ran_out_stops_before_its_next_write(mongo_db):
    """a stalls past its lease; b takes the turn and stores. a's next batch must not be written, and
    b must not be recorded as current (a's stalled write may have landed after b compared)."""
    clock = FakeClock()
    turns = StoreTurns(mongo_db, clock=clock, sleep=clock.sleep)
    frame = accepted_frame(4)
    store_b = RecordStore(mongo_db, turns=StoreTurns(mongo_db, clock=clock, sleep=clock.sleep))

    def a_stalls():
        yield frame.iloc[:2].reset_index(drop=True)
        clock.now += LEASE_S + 1
        stored_b.append(store_b.store(with_severity(frame, 0, "b"), file_name="b.csv", sha256=SHA_B, now=T1))
        yield with_severity(frame, 3, "a").iloc[2:].reset_index(drop=True)

    stored_b: list[StoreCounts] = []
    with pytest.raises(StoreTurnLost, match="another file's store took it"):
        RecordStore(mongo_db, batch_size=2, turns=turns).store(
            a_stalls(), file_name="a.csv", sha256=SHA_A, now=T0
        )
    second_batch = store_b.find_by_keys(frame["record_key"].iloc[2:])
    assert [doc["source"]["file"] for doc in second_batch] == ["b.csv", "b.csv"]  # a's not written
    assert store_b.generation() == stored_b[0].generation + 1


@pytest.mark.integration
def test_a_refused_write_is_reported_by_codes_never_quoting_the_documents(db, monkeypatch):
    # The reply a failover can give: some keys were already there (their documents come back in
    # pymongo's error) and the write concern was not met. Nothing of the documents may surface.
    real_insert_many = Collection.insert_many

    def refused(collection, documents, *args, **kwargs):
        collection.insert_one(dict(documents[0]))  # a concurrent writer got there first
        try:
            real_insert_many(collection, documents, *args, **kwargs)
        except BulkWriteError as error:
            assert error.details["writeErrors"][0]["op"]["patient_id"] == "P0000000"  # pymongo's text has it
            error.details["writeConcernErrors"] = [
                {"code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting for replication timed out"}
            ]
            raise
        raise AssertionError("the first document was stored twice")

    monkeypatch.setattr(Collection, "insert_many", refused)
    with pytest.raises(MongoRefused) as caught:
        RecordStore(db, target="db.example.org:27017").store(
            accepted_frame(3), file_name="a.csv", sha256=SHA_A, now=T0
        )
    message = str(caught.value)
    assert message == (
        "MongoDB at db.example.org:27017 refused the operation: BulkWriteError: 2 inserted, 0 modified; "
        "write errors: code 11000 x1; write concern errors: code 64 (WriteConcernFailed)"
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no chained pymongo text


@pytest.mark.integration
def test_a_store_that_fails_midway_has_already_moved_the_generation(mongo_db, monkeypatch):
    # File b changes a's records, then fails at its second batch: a must not look unchanged.
    store = RecordStore(mongo_db, batch_size=2)
    frame = accepted_frame(4)
    stored_a = store.store(frame, file_name="a.csv", sha256=SHA_A, now=T0).generation
    update = RecordStore._update
    calls = []

    def fails_the_second_time(self, documents):
        calls.append(len(documents))
        if len(calls) == 2:
            raise MongoUnavailable("cannot reach MongoDB (a test)")
        return update(self, documents)

    monkeypatch.setattr(RecordStore, "_update", fails_the_second_time)
    changed = frame
    for row in range(4):
        changed = with_severity(changed, row, "x")
    with pytest.raises(MongoUnavailable):
        store.store(changed, file_name="b.csv", sha256=SHA_B, now=T1)
    assert [doc["severity"] for doc in dump(store)].count("x") == 2  # the first batch went through
    assert store.generation() != stored_a


@pytest.mark.integration
def test_stores_starting_at_once_on_a_fresh_database_all_move_the_generation(mongo_db):
    # A backfill's first files reach the store together: the counter's document does not exist yet.
    frames = [with_severity(accepted_frame(2), 0, f"s{n}") for n in range(6)]

    def store(n: int) -> StoreCounts:
        return RecordStore(mongo_db).store(frames[n], file_name=f"{n}.csv", sha256=f"{n}" * 64, now=T0)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(store, range(6)))  # none fails
    assert RecordStore(mongo_db).generation() == 2 * 6


@pytest.fixture
def separate_clients(mongo_db, secantus_uri):
    """`separate_clients(n)`: the test's database through n clients of their own, as separate run
    processes have; all closed after the test."""
    import pymongo

    clients: list[pymongo.MongoClient] = []

    def databases(count: int) -> list:
        clients.extend(pymongo.MongoClient(secantus_uri) for _ in range(count))
        return [client[mongo_db.name] for client in clients[-count:]]

    yield databases
    for client in clients:
        client.close()


@pytest.mark.integration
def test_only_one_store_holds_the_turn_however_many_race_for_it(separate_clients):
    # Separate clients, all taking the turn at the same moments.
    databases = separate_clients(6)
    inside, overlaps, entries = [0], [], []

    def take_turns(n: int) -> None:
        turns = StoreTurns(databases[n], sleep=lambda _: time.sleep(0.001))
        for _ in range(15):
            with turns.turn(f"{n}.csv", SHA_A):
                inside[0] += 1
                overlaps.append(inside[0])
                time.sleep(0.002)
                inside[0] -= 1
                entries.append(n)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(take_turns, range(6)))
    assert len(entries) == 6 * 15 and max(overlaps) == 1


def renewals(db) -> int:
    return db["tm2_meta"].find_one({"_id": TURN_ID})["renewals"]


@pytest.mark.integration
def test_a_store_that_only_reads_still_renews_its_turn(mongo_db):
    # A re-store of a large unchanged file writes nothing for minutes: its turn must not look dead.
    clock = FakeClock()
    store = RecordStore(mongo_db, batch_size=2, turns=StoreTurns(mongo_db, clock=clock, sleep=clock.sleep))
    frame = accepted_frame(6)
    store.store(frame, file_name="a.csv", sha256=SHA_A, now=T0)

    def slowly():
        for start in (0, 2, 4):
            clock.now += RENEW_AFTER_S + 1
            yield frame.iloc[start : start + 2].reset_index(drop=True)

    before = renewals(mongo_db)
    assert store.store(slowly(), file_name="a.csv", sha256=SHA_A, now=T1).unchanged == 6
    assert renewals(mongo_db) - before == 1 + 3 + 1  # taken, renewed at each batch, given up


@pytest.mark.integration
def test_a_store_whose_turn_was_taken_over_during_its_last_write_fails(mongo_db, monkeypatch):
    # Its write may have landed after the new holder compared those records: it must not report
    # success (the step's retry stores the file whole again), nor let the other store look current.
    insert = RecordStore._insert

    def insert_then_taken_over(self, documents):
        written = insert(self, documents)
        mongo_db["tm2_meta"].update_one({"_id": TURN_ID}, {"$set": {"holder": "another store"}})
        return written

    monkeypatch.setattr(RecordStore, "_insert", insert_then_taken_over)
    store = RecordStore(mongo_db)
    with pytest.raises(StoreTurnLost, match="took it over"):
        store.store(accepted_frame(3), file_name="a.csv", sha256=SHA_A, now=T0)
    assert store.generation() == 2  # before the write, and for the lost turn


@pytest.mark.integration
def test_stores_waiting_for_the_turn_take_it_in_the_order_they_asked(mongo_db, separate_clients):
    """c holds the turn; the original asks, then its correction: the correction must store last (it
    wins every shared record). Before the line, the later asker polled more often and went first."""
    holder = StoreTurns(mongo_db)
    holder._take("c.csv", "c", None)
    order: list[str] = []
    databases = separate_clients(2)

    def store(n: int, file_name: str) -> None:
        with StoreTurns(databases[n]).turn(file_name, SHA_A):
            order.append(file_name)

    with ThreadPoolExecutor(2) as pool:
        original = pool.submit(store, 0, "original.csv")
        wait_until_in_line(mongo_db, "original.csv")
        time.sleep(3.5)  # the original's polls are far apart by now (they used to back off)
        correction = pool.submit(store, 1, "correction.csv")
        wait_until_in_line(mongo_db, "correction.csv")
        holder._give_up()
        for store_done in (original, correction):
            store_done.result(timeout=30)
    assert order == ["original.csv", "correction.csv"]


class PausedOnceInLine:
    """A store's lease collection that stops its store right after the write by which it asks for
    the turn, until resumed (as a scheduler may pause a process at any point). That is its third
    write, whatever its form: the first two make sure the lease exists and look for a turn of its
    own to take back (a step retry's)."""

    ASKING_WRITE = 3

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self.writes = 0
        self.placed, self.resume = threading.Event(), threading.Event()

    def __getattr__(self, name: str):
        return getattr(self.collection, name)

    def _written(self, result):
        self.writes += 1
        if self.writes == self.ASKING_WRITE:
            self.placed.set()
            assert self.resume.wait(30)
        return result

    def update_one(self, *args, **kwargs):
        return self._written(self.collection.update_one(*args, **kwargs))

    def find_one_and_update(self, *args, **kwargs):
        return self._written(self.collection.find_one_and_update(*args, **kwargs))


@pytest.mark.integration
def test_a_store_asking_the_moment_another_took_its_place_in_line_waits_behind_it(mongo_db, separate_clients):
    """Before, a place in line took two writes (a ticket, then the entry): a correction asking
    between them found no one before it and stored first, and the original then overwrote it."""
    original, correction = (StoreTurns(database) for database in separate_clients(2))
    original.collection = paused = PausedOnceInLine(original.collection)
    order: list[str] = []

    def store(turns: StoreTurns, file_name: str) -> None:
        with turns.turn(file_name, SHA_A):
            order.append(file_name)

    def line() -> list[str]:
        return [
            waiter["file"] for waiter in mongo_db["tm2_meta"].find_one({"_id": TURN_ID}).get("line") or []
        ]

    with ThreadPoolExecutor(2) as pool:
        stored_original = pool.submit(store, original, "original.csv")
        assert paused.placed.wait(30)
        stored_correction = pool.submit(store, correction, "correction.csv")
        deadline = time.monotonic() + 30
        while "correction.csv" not in order + line() and time.monotonic() < deadline:
            time.sleep(0.02)
        paused.resume.set()
        for stored in (stored_original, stored_correction):
            stored.result(timeout=30)
    assert order == ["original.csv", "correction.csv"]


def test_the_sources_of_versions_are_those_of_this_file_name_only(db):
    # The same bytes may come under two names: a record last written from them under another name
    # is that file's, not one this name's correction left behind.
    store = RecordStore(db)
    sources = {
        "k1": ("clinicA.csv", SHA_A, 1),
        "k2": ("clinicB.csv", SHA_A, 1),
        "k3": ("clinicA.csv", SHA_B, 2),
    }
    store.collection.insert_many(
        [
            {"_id": key, "source": {"file": name, "sha256": sha, "row": row}}
            for key, (name, sha, row) in sources.items()
        ]
    )
    assert list(store.sources_of_versions("clinicA.csv", [SHA_A])) == [("k1", SHA_A, 1)]
    assert sorted(store.sources_of_versions("clinicA.csv", [SHA_A, SHA_B])) == [
        ("k1", SHA_A, 1),
        ("k3", SHA_B, 2),
    ]
    assert list(store.sources_of_versions("clinicA.csv", [])) == []
