"""Fault injection in front of the emulator, as a gateway and an overloaded OpenMRS would misbehave.

Kinds (each a probability per request), on the REST and the FHIR paths alike:
- error_500        OpenMRS JSON 500 (on FHIR paths: an OperationOutcome), nothing written
- bad_gateway      nginx HTML 502, nothing written
- unavailable      HTML 503 with Retry-After (OpenMRS starting up), nothing written
- gateway_timeout  nginx HTML 504, nothing written
- timeout          the request hangs `hang_s` (past the client's read timeout), then is processed late
- drop             the connection is cut mid-answer, nothing written
- lost_response    the request IS processed, then the answer is lost (504 page or a cut connection):
                   the case exactly-once submission exists for
Plus latency: `latency_ms` + uniform jitter, and rare outliers.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tm2_pipeline.openmrs.emulator.representations import FHIR_PREFIX, error, html_page, operation_outcome

KINDS = ("error_500", "bad_gateway", "unavailable", "gateway_timeout", "timeout", "drop", "lost_response")


class DroppedConnection(Exception):
    """Raised after the answer started: the server closes the connection (fault injection, not a bug)."""


@dataclass(frozen=True)
class FaultConfig:
    rates: Mapping[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    outlier_rate: float = 0.0
    outlier_ms: float = 0.0
    hang_s: float = 35.0
    retry_after_s: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}; known: {list(KINDS)}")
        if any(not 0 <= rate <= 1 for rate in self.rates.values()) or sum(self.rates.values()) > 1:
            raise ValueError("fault rates are fractions 0..1 and must not add up to more than 1")

    @classmethod
    def spread(cls, fault_rate: float, **options: object) -> FaultConfig:
        """`fault_rate` of all requests fail, shared equally among every kind."""
        return cls(rates={kind: fault_rate / len(KINDS) for kind in KINDS}, **options)  # type: ignore[arg-type]


def _gateway_page(status: int) -> Response:
    titles = {502: "502 Bad Gateway", 504: "504 Gateway Time-out"}
    return html_page(status, titles[status], "nginx")


class FaultInjector:
    """ASGI middleware: `FaultInjector(app, FaultConfig(...))`. `injected` counts faults by kind."""

    def __init__(self, app: ASGIApp, config: FaultConfig) -> None:
        self.app = app
        self.config = config
        self.random = random.Random(config.seed)
        self.injected: Counter[str] = Counter()

    def _pick(self) -> str | None:
        roll = self.random.random()
        for kind in KINDS:
            roll -= self.config.rates.get(kind, 0.0)
            if roll < 0:
                return kind
        return None

    async def _delay(self) -> None:
        delay = self.config.latency_ms + self.random.uniform(0, self.config.jitter_ms)
        if self.config.outlier_rate and self.random.random() < self.config.outlier_rate:
            delay += self.config.outlier_ms
        if delay > 0:
            await asyncio.sleep(delay / 1000)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self._delay()
        kind = self._pick()
        if kind is None:
            await self.app(scope, receive, send)
            return
        self.injected[kind] += 1
        if kind == "timeout":
            # Read the request before hanging: the client will be gone, yet the write still happens late.
            replay = await _buffered(receive)
            await asyncio.sleep(self.config.hang_s)
            await self.app(scope, replay, send)
        elif kind == "lost_response":
            await self.app(scope, receive, _discard)
            if self.random.random() < 0.5:
                await _gateway_page(504)(scope, receive, send)
            else:
                await _cut(send)
        elif kind == "drop":
            await _cut(send)
        elif kind == "error_500":
            await _server_error(scope["path"])(scope, receive, send)
        elif kind == "unavailable":
            page = html_page(
                503,
                "Service Unavailable",
                "OpenMRS is starting up. Please wait…",
                headers={"Retry-After": str(self.config.retry_after_s)},
            )
            await page(scope, receive, send)
        else:
            await _gateway_page(502 if kind == "bad_gateway" else 504)(scope, receive, send)


def _server_error(path: str) -> Response:
    """The database gone: OpenMRS's JSON 500, or HAPI's OperationOutcome on the FHIR paths."""
    cause = "org.hibernate.exception.JDBCConnectionException: Unable to acquire JDBC Connection"
    if path.startswith(FHIR_PREFIX):
        return operation_outcome(500, f"Failed to call access method: {cause}")
    return error(500, f"Unexpected error [{cause}]", "org.hibernate.exception.JDBCConnectionException:0")


async def _buffered(receive: Receive) -> Receive:
    """Receive the whole request body now; the returned `receive` replays it, then reports the disconnect."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body"):
            break

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay


async def _discard(message: Message) -> None:
    """The answer the client never gets."""


async def _cut(send: Send) -> None:
    """Start an answer, then fail: the server closes the connection and the client sees a broken stream."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"resu', "more_body": True})
    raise DroppedConnection("fault injection: connection dropped")
