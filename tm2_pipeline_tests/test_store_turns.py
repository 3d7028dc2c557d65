"""StoreTurns, the lease stores of different files take turns by (mongomock, one thread, a fake
monotonic clock; the turns between real stores and processes on SecantusDB are in
test_store_records.py)."""

from __future__ import annotations

import mongomock
import pytest
from pymongo.errors import AutoReconnect

from tm2_pipeline.store.store_turns import (
    LEASE_S,
    POLL_S,
    RENEW_AFTER_S,
    TURN_ID,
    WAITER_STALE_S,
    StoreTurnLost,
    StoreTurns,
)
from tm2_pipeline_tests.store_turn_helpers import FakeClock

SHA = "c" * 64


@pytest.fixture
def db():
    return mongomock.MongoClient()["tm2"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def turns(db, clock: FakeClock, sleep=None) -> StoreTurns:
    def bounded_sleep(seconds: float) -> None:
        # A line that never moves fails here, not at the test run's timeout.
        assert clock.now - 5_000.0 < 20 * LEASE_S, "waited twenty leases for the turn"
        (sleep or clock.sleep)(seconds)

    return StoreTurns(db, clock=clock, sleep=bounded_sleep)


def lease(db) -> dict:
    return db["tm2_meta"].find_one({"_id": TURN_ID}, {"_id": 0})


def test_a_free_turn_is_taken_at_once_and_given_up_after(db, clock):
    with turns(db, clock).turn("a.csv", SHA):
        assert (lease(db)["file"], lease(db)["key"]) == ("a.csv", f"a.csv:{SHA}")
        assert lease(db)["line"] == []
    assert clock.now == 5_000.0  # no wait
    assert (lease(db)["holder"], lease(db)["file"]) == (None, None)


def test_a_store_waits_while_the_holder_renews_and_is_told_once_who_holds_it(db, clock):
    holder, told = turns(db, clock), []

    def holder_writes_meanwhile(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now < 5_000.0 + 3 * LEASE_S:
            holder.keep()  # a batch at a time, renewing when due
        else:
            holder._give_up()

    with holder.turn("a.csv", SHA), turns(db, clock, holder_writes_meanwhile).turn("b.csv", SHA, told.append):
        assert lease(db)["file"] == "b.csv"
    assert told == [
        "waiting for the store of a.csv to finish (if it was stopped, its turn is taken over"
        " 2 minutes after its last sign of life)"
    ]
    assert clock.now >= 5_000.0 + 3 * LEASE_S  # three leases long: the renewals kept it the holder's


def test_a_holder_whose_renewals_stand_still_is_taken_over_after_the_lease(db, clock):
    turns(db, clock)._take("a.csv", f"a.csv:{SHA}", None)  # and dies
    started = clock.now
    with turns(db, clock).turn("b.csv", SHA):
        assert lease(db)["file"] == "b.csv"
    assert LEASE_S <= clock.now - started <= LEASE_S + 2 * POLL_S


def test_no_wall_clock_is_compared_a_far_off_clock_changes_nothing(db, clock):
    # A holder on a host whose clock is hours ahead or behind: only counts are stored.
    holder = StoreTurns(db, clock=lambda: clock.now + 86_400.0)
    holder._take("a.csv", f"a.csv:{SHA}", None)
    stored = lease(db)
    assert not any(isinstance(value, float) for value in stored.values())


def test_a_store_lets_the_stores_that_asked_before_it_go_first(db, clock):
    holder, first, order = turns(db, clock), turns(db, clock), []
    holder._take("h.csv", "h", None)
    first._join_line("first-token", "first.csv", "first")  # asks while h holds the turn
    holder._give_up()

    def first_polls_meanwhile(seconds: float) -> None:
        clock.sleep(seconds)
        if not order:
            first._wait_in_line("first-token", "first.csv", "first", None)
            order.append("first took")
            first._give_up()

    # The second asks once the turn is free, and polls before the first does: it still waits.
    with turns(db, clock, first_polls_meanwhile).turn("second.csv", SHA):
        order.append("second took")
    assert order == ["first took", "second took"]


def test_a_waiter_that_died_in_line_is_passed_after_it_stops_beating(db, clock):
    holder = turns(db, clock)
    holder._take("h.csv", "h", None)
    dead = turns(db, clock)
    dead._join_line("dead-token", "dead.csv", "dead")  # killed while waiting: its beat stands still
    holder._give_up()
    started = clock.now
    with turns(db, clock).turn("b.csv", SHA):
        assert lease(db)["file"] == "b.csv" and lease(db)["line"] == []
    assert WAITER_STALE_S <= clock.now - started <= WAITER_STALE_S + 2 * POLL_S


def test_a_failing_store_keeps_its_turn_for_its_retry_and_others_wait_out_the_lease(db, clock):
    # Its writes may still be landing, and the file is not stored whole: a later file must not go
    # in between (its retry would then store the earlier file over it).
    with pytest.raises(ValueError, match="bad frame"), turns(db, clock).turn("a.csv", SHA):
        raise ValueError("bad frame")
    assert lease(db)["file"] == "a.csv"
    with turns(db, clock).turn("a.csv", "d" * 64):  # another content of the name: not its retry
        pass
    assert clock.now - 5_000.0 >= LEASE_S
    with pytest.raises(ValueError), turns(db, clock).turn("a.csv", SHA):
        raise ValueError("an outage")
    started = clock.now
    with turns(db, clock).turn("a.csv", SHA):  # the retry
        assert lease(db)["file"] == "a.csv"
    assert clock.now == started and lease(db)["holder"] is None


def test_a_failing_give_up_changes_no_outcome(db, clock, monkeypatch):
    store = turns(db, clock)
    with store.turn("a.csv", SHA):  # succeeds although the give-up fails: every record had landed
        monkeypatch.setattr(store, "_give_up", lambda: (_ for _ in ()).throw(AutoReconnect("gone")))
    assert lease(db)["file"] == "a.csv"  # left behind: taken over after the lease


def test_a_waiter_passed_as_dead_that_comes_back_joins_the_end_of_the_line(db, clock):
    holder, observer, slow = turns(db, clock), turns(db, clock), turns(db, clock)
    holder._take("h.csv", "h", None)
    slow._join_line("slow-token", "slow.csv", "slow")  # stops beating (a laptop asleep), then wakes
    watched: dict = {}
    assert observer._first_live_waiter(lease(db)["line"], watched, clock.now) == "slow-token"
    clock.now += WAITER_STALE_S
    assert observer._first_live_waiter(lease(db)["line"], watched, clock.now) is None  # passed
    observer._join_line("later-token", "later.csv", "later")  # asked while the slow one was away
    slow._beat("slow-token", "slow.csv", "slow")  # it beats again
    assert [waiter["token"] for waiter in lease(db)["line"]] == ["later-token", "slow-token"]


def test_a_holder_renews_only_when_due_and_stops_once_its_turn_was_taken_over(db, clock):
    holder = turns(db, clock)
    with pytest.raises(StoreTurnLost, match="another file's store took it over"), holder.turn("a.csv", SHA):
        renewals = lease(db)["renewals"]
        clock.now += RENEW_AFTER_S - 1
        holder.keep()
        assert lease(db)["renewals"] == renewals  # not due yet
        clock.now += 2
        holder.keep()
        assert lease(db)["renewals"] == renewals + 1
        holder.keep(now_or_never=True)
        assert lease(db)["renewals"] == renewals + 2
        # Stalled: another store watches the renewals stand still for a lease, then takes over.
        turns(db, clock)._take("b.csv", f"b.csv:{SHA}", None)
        holder.keep(now_or_never=True)
    assert lease(db)["file"] == "b.csv"  # the loser's exit leaves the new holder's turn alone


def test_writing_without_the_turn_is_refused(db, clock):
    with pytest.raises(StoreTurnLost, match="without holding its turn"):
        turns(db, clock).keep()


def test_a_claim_that_landed_without_its_answer_is_recognised_at_the_next_poll(db, clock, monkeypatch):
    def sleep(seconds: float) -> None:
        assert clock.now - 5_000.0 < LEASE_S, "still waiting for a turn it holds"
        clock.sleep(seconds)

    store = turns(db, clock, sleep)
    update_one = store.collection.update_one

    class Unanswered:
        matched_count = 0

    def claim_lands_answer_lost(spec, change, **kwargs):
        result = update_one(spec, change, **kwargs)
        return Unanswered() if "$pull" in change and "holder" in spec else result

    monkeypatch.setattr(store, "collection", db["tm2_meta"])
    monkeypatch.setattr(store.collection, "update_one", claim_lands_answer_lost)
    with store.turn("a.csv", SHA):
        assert lease(db)["file"] == "a.csv"
    assert clock.now - 5_000.0 <= POLL_S  # one poll, not a lease
    assert lease(db)["holder"] is None  # and given up after, as its own
    assert lease(db)["line"] == []  # the beat after the lost answer put it back in line: removed


def test_a_waiter_passed_as_dead_and_back_is_not_passed_again_by_one_that_saw_its_old_entry(db, clock):
    observer, slow, old_watch = a_waiter_standing_still_for_long(db, clock)  # the observer was stalled
    db["tm2_meta"].update_one({"_id": TURN_ID}, {"$pull": {"line": {"token": "slow-token"}}})  # passed
    slow._beat("slow-token", "slow.csv", "slow")  # back: joins the end, its beat unlike any it showed before
    assert observer._first_live_waiter(lease(db)["line"], old_watch, clock.now) == "slow-token"
    assert [waiter["token"] for waiter in lease(db)["line"]] == ["slow-token"]


def a_waiter_standing_still_for_long(db, clock: FakeClock) -> tuple[StoreTurns, StoreTurns, dict]:
    """h.csv holds the turn; slow.csv's store waits and has not beaten for WAITER_STALE_S by the
    watch of an observer (another waiter). Returns the observer, the slow store and the watch."""
    holder, observer, slow = turns(db, clock), turns(db, clock), turns(db, clock)
    holder._take("h.csv", "h", None)
    slow._join_line("slow-token", "slow.csv", "slow")
    watched: dict = {}
    observer._first_live_waiter(lease(db)["line"], watched, clock.now)
    clock.now += WAITER_STALE_S
    return observer, slow, watched


def test_a_waiter_passed_as_dead_and_back_is_not_passed_again_at_once(db, clock):
    observer, slow, watched = a_waiter_standing_still_for_long(db, clock)
    assert observer._first_live_waiter(lease(db)["line"], watched, clock.now) is None  # passed
    slow._beat("slow-token", "slow.csv", "slow")  # back, and then stalls again for a few polls
    for _ in range(3):
        clock.now += POLL_S
        assert observer._first_live_waiter(lease(db)["line"], watched, clock.now) == "slow-token"


def test_a_beat_that_lands_before_the_pass_keeps_the_waiter_in_line(db, clock):
    observer, slow, watched = a_waiter_standing_still_for_long(db, clock)
    read_before_the_beat = lease(db)["line"]
    slow._beat("slow-token", "slow.csv", "slow")
    observer._first_live_waiter(read_before_the_beat, watched, clock.now)  # its pass lands after the beat
    assert [(waiter["token"], waiter["beat"]) for waiter in lease(db)["line"]] == [("slow-token", 1)]


def test_a_waiter_stalled_itself_does_not_count_the_stall_against_what_it_watched(db, clock):
    # A paused VM or a server failover stalls the holder's renewals and the waiter's polls alike.
    holder = turns(db, clock)
    holder._take("a.csv", f"a.csv:{SHA}", None)
    polls = []

    def stalled_once_then_holder_renews(seconds: float) -> None:
        polls.append(clock.now)
        clock.sleep(seconds + (LEASE_S if len(polls) == 1 else 0.0))  # one long stall
        if len(polls) == 2:
            holder.keep(now_or_never=True)  # the holder renews as soon as it runs again
        elif len(polls) > 6:
            holder._give_up()

    with turns(db, clock, stalled_once_then_holder_renews).turn("b.csv", SHA):
        pass
    assert len(polls) > 6  # it waited for the holder to give up, not taken over at the stall


def test_a_store_interrupted_while_waiting_leaves_the_line(db, clock):
    holder = turns(db, clock)
    holder._take("a.csv", f"a.csv:{SHA}", None)

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), turns(db, clock, interrupted).turn("b.csv", SHA):
        pass
    assert lease(db)["line"] == [] and lease(db)["file"] == "a.csv"


def held_while_a_wait_fails(db, clock: FakeClock) -> StoreTurns:
    """h.csv holds the turn; original.csv's store (run-1) waits, and its poll fails on a failover.
    The holder is returned."""
    holder = turns(db, clock)
    holder._take("h.csv", "h", None)

    def failover(seconds: float) -> None:
        raise AutoReconnect("primary stepped down")

    with pytest.raises(AutoReconnect), turns(db, clock, failover).turn("original.csv", SHA, run_id="run-1"):
        pass
    return holder


def test_a_store_whose_wait_failed_on_mongodb_resumes_its_place_in_its_retry(db, clock):
    # The original's correction asks while the original's step waits for its retry. That retry
    # must not go behind it (the correction would then lose to the original).
    holder = held_while_a_wait_fails(db, clock)
    [left] = lease(db)["line"]
    turns(db, clock)._join_line("correction-token", "correction.csv", f"correction.csv:{SHA}")

    def holder_gives_up(seconds: float) -> None:
        clock.sleep(seconds)
        if holder._token is not None:
            holder._give_up()

    started = clock.now
    retry = turns(db, clock, holder_gives_up)
    original_line = retry.collection.update_one

    def resumed_under_its_own_token(spec, change, **kwargs):
        result = original_line(spec, change, **kwargs)
        if "line.$.token" in change.get("$set", {}):
            assert lease(db)["line"][0]["token"] not in (left["token"], None)
        return result

    retry.collection = db["tm2_meta"]
    retry.collection.update_one = resumed_under_its_own_token
    with retry.turn("original.csv", SHA, run_id="run-1"):  # the step's retry
        assert [waiter["file"] for waiter in lease(db)["line"]] == ["correction.csv"]
    assert clock.now - started < WAITER_STALE_S  # first in line again, at once


def test_only_a_retry_of_the_same_run_resumes_a_place_left_in_line(db, clock):
    # A later run of the same file (the sensor's next attempt, the nightly retry) asks anew: a place
    # left long ago, with no one else waiting to pass it, must not put it ahead of recent askers.
    held_while_a_wait_fails(db, clock)
    later = turns(db, clock)
    later._run_id = "run-2"
    assert later._place_of(f"original.csv:{SHA}") is None
    later._run_id = "run-1"
    assert later._place_of(f"original.csv:{SHA}") is not None
    later._run_id = None  # a store outside a run (tm2 ingest --dry-run aside, tests) never resumes
    assert later._place_of(f"original.csv:{SHA}") is None


def test_a_place_whose_earlier_attempt_still_beats_is_not_resumed(db, clock):
    # The earlier attempt is alive after all (a worker taken for dead): its retry must not share its
    # entry (both would then take the turn as theirs), but go behind it.
    holder, earlier, retry = turns(db, clock), turns(db, clock), turns(db, clock)
    holder._take("h.csv", "h", None)
    earlier._run_id = retry._run_id = "run-1"
    earlier._join_line("earlier-token", "original.csv", "original")
    seen = retry._place_of("original")
    earlier._beat("earlier-token", "original.csv", "original")  # it lives
    assert not retry._resume(seen, "retry-token")
    assert [waiter["token"] for waiter in lease(db)["line"]] == ["earlier-token"]
    assert retry._resume(retry._place_of("original"), "retry-token")  # had it stood still
    assert [waiter["token"] for waiter in lease(db)["line"]] == ["retry-token"]
