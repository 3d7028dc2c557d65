"""The OpenMRS REST client: one login per run, cached lookups, reads and pages, retry policy.

The only module that speaks HTTP to OpenMRS (the condition endpoints, rest_conditions.py and
fhir_client.py, send through it). Patient identifiers travel in query strings, so httpx's
request logging is silenced and no URL or response body ever reaches an exception message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx
import tenacity

from tm2_pipeline.openmrs.client_config import ClientConfig, RetryAfterOrJitter, certificate_problem
from tm2_pipeline.openmrs.errors import (
    ClaimLapsed,
    OpenMRSAccessError,
    OpenMRSAuthError,
    OpenMRSConfigError,
    OpenMRSError,
    TransientOpenMRSError,
)
from tm2_pipeline.openmrs.responses import server_message
from tm2_pipeline.openmrs.transient import (
    may_have_been_sent,
    raise_if_transient,
    raise_if_webapp_missing,
)

# What the concept index needs of each concept listed for the source, and no more.
CONCEPT_INDEX_VIEW = "custom:(uuid,retired,mappings:(conceptReferenceTerm:(code,conceptSource:(uuid))))"
# TM2 has 648 codes: a source mapping many more concepts is not a TM2 source; ask it code by code.
MAX_INDEXED_CONCEPTS = 2000

Sleep = Callable[[float], Awaitable[None]]


class OpenMRSClient:
    """Use as `async with OpenMRSClient(config) as client:`; logs in lazily, once."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.config = config
        self._transport = transport
        self._sleep = sleep
        self._http: httpx.AsyncClient | None = None
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._login_lock = asyncio.Lock()
        self._session_generation = 0  # bumped at every successful login
        self._relogin_used = False
        self._auth_failure: OpenMRSAuthError | None = None
        self._cache: dict[tuple[str, str], asyncio.Future] = {}
        self.requests: Counter[str] = Counter()
        self.login_attempts = 0

    async def __aenter__(self) -> OpenMRSClient:
        limits = httpx.Limits(
            max_connections=self.config.concurrency, max_keepalive_connections=self.config.concurrency
        )
        timeout = httpx.Timeout(self.config.read_timeout_s, connect=self.config.connect_timeout_s)
        self._http = httpx.AsyncClient(
            base_url=self.config.rest_base,
            transport=self._transport,
            timeout=timeout,
            limits=limits,
            headers={"Accept": "application/json"},
            follow_redirects=False,
            verify=self.config.tls_verification(),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def server(self) -> str:
        return self.config.server

    def retrying(self) -> tenacity.AsyncRetrying:
        """The one retry policy: transient failures only, bounded attempts, backoff with jitter."""
        return tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(TransientOpenMRSError),
            stop=tenacity.stop_after_attempt(self.config.max_attempts),
            wait=RetryAfterOrJitter(
                self.config.backoff_initial_s, self.config.backoff_max_s, self.config.retry_after_max_s
            ),
            sleep=self._sleep,
            reraise=True,
        )

    # --- session -------------------------------------------------------------------------------

    async def ensure_session(self) -> None:
        """Log in unless a session exists. A refused login is remembered: never a second attempt."""
        if self._session_generation == 0:
            await self._login_once(expected_generation=0)

    async def _login_once(self, *, expected_generation: int) -> None:
        async with self._login_lock:
            if self._auth_failure is not None:
                raise self._auth_failure
            if self._session_generation != expected_generation:
                return  # another task logged in meanwhile
            async for attempt in self.retrying():
                with attempt:
                    await self._login()

    async def _login(self) -> None:
        assert self._http is not None, "use the client inside `async with`"
        self._http.cookies.clear()
        credentials = httpx.BasicAuth(self.config.username, self.config.password)
        self.login_attempts += 1
        response = await self._exchange("GET", "/session", what="login", auth=credentials)
        raise_if_transient(response, "GET", "login", server_error_is_transient=True)
        if response.status_code == 404 or response.is_redirect:
            # Not an answer about the credentials. At the run's first login: the URL does not lead to
            # OpenMRS's REST API. At a re-login, the same URL worked: OpenMRS redeploying, a gateway.
            what = f"GET {self.config.rest_base}/session answered {response.status_code}"
            if self._session_generation:
                raise TransientOpenMRSError(what, method="GET", status=response.status_code)
            raise OpenMRSConfigError(
                f"{what}{' (a redirect; redirects are not followed)' if response.is_redirect else ''}: "
                "set OPENMRS_BASE_URL to the OpenMRS webapp root, such as https://host/openmrs (a "
                "gateway's login page, or OpenMRS still starting, can answer so too)"
            )
        authenticated = False
        if response.status_code == 200:
            try:
                authenticated = response.json().get("authenticated") is True
            except ValueError:
                authenticated = False
        if not authenticated:
            # OpenMRS answers a wrong password with 200 and `"authenticated": false`, not with 401.
            answer = "authenticated: false" if response.status_code == 200 else str(response.status_code)
            self._auth_failure = OpenMRSAuthError(
                f"OpenMRS rejected the credentials for user {self.config.username!r} "
                f"(GET /session answered {answer}); not retrying: repeated failures lock the account"
            )
            raise self._auth_failure
        self._session_generation += 1

    async def _relogin(self, generation: int) -> None:
        """A stale session (401): drop the cookie and log in again; a second 401 before any request
        succeeded on the fresh session stops the run (`send` allows another once one has).

        Only a re-login that succeeded counts: one that met an outage proved nothing about sessions.
        """
        async with self._login_lock:
            if self._session_generation != generation:
                return
            if self._relogin_used:
                self._auth_failure = OpenMRSAuthError(
                    f"OpenMRS ended the session of user {self.config.username!r} again after a fresh "
                    "login; stopping"
                )
                raise self._auth_failure
        await self._login_once(expected_generation=generation)
        self._relogin_used = True

    async def logout(self) -> None:
        if self._http is not None and self._session_generation:
            # A failed logout does not matter: the session expires on its own.
            with contextlib.suppress(TransientOpenMRSError):
                await self._exchange("DELETE", "/session", what="logout")

    # --- requests ------------------------------------------------------------------------------

    async def _exchange(
        self, method: str, path: str, *, what: str, not_after: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One HTTP exchange; transport failures become `TransientOpenMRSError` with a neutral message.
        `not_after` (time.time): a claimed write not sent by then raises `ClaimLapsed` instead."""
        assert self._http is not None, "use the client inside `async with`"
        try:
            async with self._semaphore:
                if not_after is not None and time.time() > not_after:
                    raise ClaimLapsed(what)
                response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as error:
            raise TransientOpenMRSError(
                f"{what}: timed out ({type(error).__name__})",
                method=method,
                in_doubt=may_have_been_sent(error),
            ) from None
        except httpx.TransportError as error:
            if problem := certificate_problem(error, self.config.host):
                raise OpenMRSConfigError(f"{what}: {problem}") from None
            raise TransientOpenMRSError(
                f"{what}: connection to {self.config.host} failed ({type(error).__name__})",
                method=method,
                in_doubt=may_have_been_sent(error),
            ) from None
        self.requests[method] += 1
        return response

    async def send(self, method: str, path: str, *, what: str, **kwargs: Any) -> httpx.Response:
        """A request inside the session: a 401 gets one re-login (per run), then the request again."""
        await self.ensure_session()
        for _ in range(2):
            generation = self._session_generation
            response = await self._exchange(method, path, what=what, **kwargs)
            if response.status_code != 401:
                if generation == self._session_generation:
                    # The fresh session works: a later expiry (an OpenMRS restart) gets its own login.
                    self._relogin_used = False
                return response
            await self._relogin(generation)
        raise OpenMRSAuthError(f"OpenMRS keeps refusing the session of user {self.config.username!r}")

    async def get_json(
        self,
        path: str,
        *,
        what: str,
        params: dict[str, str] | None = None,
        missing_ok: bool = False,
        secrets: tuple[str, ...] = (),
    ) -> dict[str, Any] | None:
        """GET and parse. Reads are idempotent, so any 5xx is transient; 403 stops the run.

        `secrets` (a looked-up patient identifier) are cut out of any server message quoted in an
        error: a proxy or gateway may echo the request line, query string included.
        """
        response = await self.send("GET", path, what=what, params=params)
        raise_if_webapp_missing(response, "GET", what)
        if response.status_code == 404 and missing_ok:
            return None
        return self.read_body(response, what, secrets=secrets)

    def read_body(self, response: httpx.Response, what: str, *, secrets: tuple[str, ...] = ()) -> Any:
        """The JSON body of a read's answer (REST or FHIR). Reads are idempotent, so any 5xx is
        transient; 403 stops the run; any other answer but 200 is an error quoting the server."""
        raise_if_transient(response, "GET", what, server_error_is_transient=True)
        if response.status_code == 403:
            raise OpenMRSAccessError(
                f"the OpenMRS user {self.config.username!r} lacks a privilege for {what}: "
                f"{server_message(response.text, secrets=secrets)}"
            )
        if response.status_code != 200:
            message = server_message(response.text, secrets=secrets)
            raise OpenMRSError(f"{what}: OpenMRS answered {response.status_code}: {message}")
        try:
            return response.json()
        except ValueError:
            raise TransientOpenMRSError(f"{what}: answer was not JSON", method="GET", status=200) from None

    async def _memo(self, kind: str, key: str, fetch: Callable[[], Awaitable[Any]]) -> Any:
        """Run-wide cache shared by concurrent tasks; a failed lookup is forgotten so it can be retried."""
        future = self._cache.get((kind, key))
        if future is None:
            future = self._cache[(kind, key)] = asyncio.ensure_future(fetch())
        try:
            return await future
        except Exception:
            if self._cache.get((kind, key)) is future:
                del self._cache[(kind, key)]
            raise

    # --- lookups -------------------------------------------------------------------------------

    async def patient_uuids(self, identifier: str) -> list[str]:
        """uuids of the non-voided patients carrying exactly this identifier (cached for the run)."""

        async def fetch() -> list[str]:
            body = await self.get_json(
                "/patient",
                what="patient lookup",
                params={"identifier": identifier, "v": "default"},
                secrets=(identifier,),
            )
            results = (body or {}).get("results") or []
            return [patient["uuid"] for patient in results if not patient.get("voided")]

        return await self._memo("patient", identifier, fetch)

    async def concept_source_uuid(self) -> str | None:
        """uuid of the configured concept source; None when there is none by that name, or it is retired."""

        async def fetch() -> str | None:
            name = quote(self.config.concept_source, safe="")
            body = await self.get_json(
                f"/conceptsource/{name}", what="concept source lookup", missing_ok=True
            )
            return None if body is None or body.get("retired") else body["uuid"]

        return await self._memo("source", self.config.concept_source, fetch)

    async def concept_source_exists(self) -> bool:
        return await self.concept_source_uuid() is not None

    async def concept_uuid(self, code: str) -> str | None:
        """The one concept mapped to `code` in the configured source; None when none (or several) are.

        Read from the run's index of the source (a few pages for all of TM2's codes) instead of one
        lookup per code; a source too large to list is asked code by code.
        """
        index = await self._memo("concept index", self.config.concept_source, self._concept_index)
        if index is not None:
            concepts = index.get(code.casefold(), set())
            return next(iter(concepts)) if len(concepts) == 1 else None

        async def fetch() -> str | None:
            params = {"source": self.config.concept_source, "code": code, "v": "ref"}
            body = await self.get_json("/concept", what="concept lookup", params=params)
            results = (body or {}).get("results") or []
            return results[0]["uuid"] if len(results) == 1 else None

        return await self._memo("concept", code, fetch)

    async def _concept_index(self) -> dict[str, set[str]] | None:
        """Code (casefolded, as OpenMRS compares codes) -> uuids of the non-retired concepts mapped to it
        in the configured source, listed a page at a time; None when the source maps more concepts
        than MAX_INDEXED_CONCEPTS."""
        source_uuid = await self.concept_source_uuid()
        index: dict[str, set[str]] = {}
        if source_uuid is None:
            return index
        params = {"source": source_uuid, "v": CONCEPT_INDEX_VIEW, "totalCount": "true"}
        listed = 0
        async for page, total in self.pages("/concept", params, what="concept list"):
            listed += len(page)
            # totalCount answers on the first page; counting covers a server that leaves it out.
            if (total or listed) > MAX_INDEXED_CONCEPTS:
                return None
            for concept in page:
                if concept.get("retired"):
                    continue
                for mapping in concept.get("mappings") or []:
                    term = mapping.get("conceptReferenceTerm") or {}
                    if (term.get("conceptSource") or {}).get("uuid") == source_uuid and term.get("code"):
                        index.setdefault(term["code"].casefold(), set()).add(concept["uuid"])
        return index

    async def pages(
        self, path: str, params: dict[str, str], *, what: str
    ) -> AsyncIterator[tuple[list[dict[str, Any]], int | None]]:
        """Every page of a paged list (`page_limit` at a time, following `next` links), with the
        `totalCount` OpenMRS adds to the first page when asked."""
        start = 0
        while True:
            paged = {**params, "limit": str(self.config.page_limit), "startIndex": str(start)}
            body = await self.get_json(path, what=what, params=paged) or {}
            page = body.get("results") or []
            yield page, body.get("totalCount")
            start += len(page)
            if not page or not any(link.get("rel") == "next" for link in body.get("links") or []):
                return
