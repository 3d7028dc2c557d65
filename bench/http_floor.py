"""The HTTP floor of stage (f): bare httpx at the same concurrency, one request per record, nothing else.

It answers "how close to C / latency can this machine get at all": the same client library, the same
emulator (same latency, same cores shared with it and with the store), the same number of requests in
flight, but no lookups, no payloads, no submission log and no retry policy. The cheapest authenticated
request the emulator serves stands in for each record's one condition create.
"""

from __future__ import annotations

import asyncio
import time

import httpx

FLOOR_PATH = "/session"  # answered from the session alone: nothing is looked up or written


async def _bare_requests(rest_base: str, auth: tuple[str, str], requests: int, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=rest_base, limits=limits) as client:
        login = await client.get(FLOOR_PATH, auth=auth)  # one login; the session cookie does the rest
        login.raise_for_status()
        slots = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with slots:
                response = await client.get(FLOOR_PATH)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        return time.perf_counter() - started


def bare_http_rate(rest_base: str, auth: tuple[str, str], requests: int, concurrency: int) -> float:
    """Requests per second that bare httpx achieves against `rest_base` with `concurrency` in flight."""
    wall = asyncio.run(_bare_requests(rest_base, auth, requests, concurrency))
    return requests / wall
