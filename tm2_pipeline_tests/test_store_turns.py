"""StoreTurns, the lease stores of different files take turns by (mongomock: no server needed; the
turns between real stores on SecantusDB are in test_store_records.py)."""

from __future__ import annotations

import mongomock
import pytest

from tm2_pipeline.store.store_turns import (
    LEASE_S,
    MAX_POLL_S,
    RENEW_AFTER_S,
    TURN_ID,
    StoreTurnLost,
    StoreTurns,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 5_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def db():
    return mongomock.MongoClient()["tm2"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def turns(db, clock: FakeClock) -> StoreTurns:
    return StoreTurns(db, clock=clock, sleep=clock.sleep)


def lease(db) -> dict:
    return db["tm2_meta"].find_one({"_id": TURN_ID}, {"_id": 0})


def test_a_free_turn_is_taken_at_once_and_given_up_after(db, clock):
    with turns(db, clock).turn("a.csv"):
        assert lease(db)["file"] == "a.csv" and lease(db)["until"] == clock.now + LEASE_S
    assert clock.slept == []
    assert lease(db) == {"holder": None, "file": None, "until": 0.0}


def test_a_store_waits_while_another_renews_and_is_told_once_who_holds_the_turn(db, clock):
    holder, waiter, told = turns(db, clock), turns(db, clock), []
    with holder.turn("a.csv"):

        def sleep(seconds: float) -> None:
            clock.sleep(seconds)
            if clock.now < 5_000.0 + 2 * LEASE_S:  # the holder writes batches meanwhile, renewing its lease
                holder.keep()
            else:
                holder._give_up()

        waiter.sleep = sleep
        with waiter.turn("b.csv", on_wait=told.append):
            assert lease(db)["file"] == "b.csv"
    assert told == ["waiting for the store of a.csv to finish"]
    assert clock.now - 5_000.0 >= 2 * LEASE_S  # waited past the first lease: the holder renewed it
    assert max(clock.slept) == MAX_POLL_S


def test_a_dead_holders_turn_is_taken_when_its_lease_runs_out(db, clock):
    turns(db, clock)._take("a.csv", None)  # and never gives it up
    started = clock.now
    with turns(db, clock).turn("b.csv"):
        assert lease(db)["file"] == "b.csv"
    assert LEASE_S <= clock.now - started <= LEASE_S + MAX_POLL_S


def test_a_failing_store_gives_its_turn_up(db, clock):
    with pytest.raises(ValueError, match="bad frame"), turns(db, clock).turn("a.csv"):
        raise ValueError("bad frame")
    assert lease(db)["until"] == 0.0


def test_a_holder_renews_only_when_due_and_stops_once_its_turn_was_taken(db, clock):
    holder = turns(db, clock)
    with pytest.raises(StoreTurnLost, match="another file's store took it"), holder.turn("a.csv"):
        clock.now += RENEW_AFTER_S - 1
        holder.keep()
        assert lease(db)["until"] == clock.now + 1 - RENEW_AFTER_S + LEASE_S  # not renewed yet
        clock.now += 2
        holder.keep()
        assert lease(db)["until"] == clock.now + LEASE_S  # renewed
        clock.now += LEASE_S + 1  # stalled past the lease
        turns(db, clock)._take("b.csv", None)
        holder.keep()
    assert lease(db)["file"] == "b.csv"  # the loser's exit leaves the new holder's lease alone


def test_writing_without_the_turn_is_refused(db, clock):
    with pytest.raises(StoreTurnLost, match="without holding its turn"):
        turns(db, clock).keep()
