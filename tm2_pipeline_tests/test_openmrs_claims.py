"""A claimed write is sent only under a fresh claim: one that waited too long for a request slot
takes the claim again first (the lease could have run out, and another run taken the record)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import pytest

from tm2_pipeline.openmrs.client import OpenMRSClient
from tm2_pipeline.openmrs.client_config import ClientConfig
from tm2_pipeline.openmrs.decisions import Action, Plan
from tm2_pipeline.openmrs.emulator.server import open_sandbox
from tm2_pipeline.openmrs.errors import ClaimLapsed
from tm2_pipeline.openmrs.record_exchange import RecordExchange, Work
from tm2_pipeline.openmrs.rest_conditions import RestConditions

CONFIG = ClientConfig("http://sandbox.invalid/openmrs", "admin", "Admin123", allow_insecure=True)


class Claims:
    """The log's claims, as far as `hold` asks: granted while `free` says so."""

    def __init__(self, free: list[bool]) -> None:
        self.free, self.asked = free, 0

    def hold_claim(self, key: str, claim: str | None) -> bool:
        self.asked += 1
        return self.free.pop(0)


def exchange(claims: Claims) -> RecordExchange:
    now = datetime(2025, 6, 1, tzinfo=UTC)
    return RecordExchange(None, claims, now, lambda: now, allow_noncoded=True)  # type: ignore[arg-type]


def work() -> Work:
    return Work({"_id": "k"}, Plan("k", Action.CORRECT, "u", "h"), "u")


def test_a_write_that_waited_past_its_deadline_takes_the_claim_again() -> None:
    claims, deadlines = Claims([True, True]), []

    async def send(deadline: float) -> str:
        deadlines.append(deadline)
        if len(deadlines) == 1:
            raise ClaimLapsed("condition create")
        return "sent"

    assert asyncio.run(exchange(claims).send_held(work(), send)) == "sent"
    assert claims.asked == 2 and deadlines[1] > deadlines[0]


def test_a_claim_taken_before_a_long_sleep_is_asked_for_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The log's lease is wall time; a monotonic clock stops while a laptop sleeps. A claim taken just
    before a 16-minute sleep must not look fresh after it: another run may have taken it over."""
    claims = Claims([False])  # it did
    taken = work()
    taken.claimed_at = time.time()  # the mark took the claim
    awake = time.time() + 16 * 60
    monkeypatch.setattr(time, "time", lambda: awake)
    assert asyncio.run(exchange(claims).hold(taken)) is False and claims.asked == 1


def test_a_claim_lost_meanwhile_sends_nothing() -> None:
    claims, sends = Claims([True, False]), []

    async def send(deadline: float) -> str:
        sends.append(deadline)
        raise ClaimLapsed("condition create")

    assert asyncio.run(exchange(claims).send_held(work(), send)) is None
    assert claims.asked == 2 and len(sends) == 1


def test_the_client_does_not_send_a_write_past_its_deadline() -> None:
    async def attempt() -> dict[str, int]:
        with open_sandbox(None) as sandbox:
            transport = httpx.ASGITransport(app=sandbox.app)
            async with OpenMRSClient(CONFIG, transport=transport) as client:
                await client.ensure_session()
                with pytest.raises(ClaimLapsed):
                    await RestConditions(client).update("some-uuid", {}, not_after=time.time() - 1)
                return dict(client.requests)

    assert asyncio.run(attempt()) == {"GET": 1}  # the login only
