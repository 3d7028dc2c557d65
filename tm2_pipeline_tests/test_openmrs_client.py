"""The OpenMRS client against scripted answers (httpx.MockTransport): session, retries, privacy."""

from __future__ import annotations

import asyncio
import html
import json
import logging
from collections.abc import Callable

import httpx
import pytest

from tm2_pipeline.openmrs.client import OpenMRSClient
from tm2_pipeline.openmrs.client_config import ClientConfig
from tm2_pipeline.openmrs.errors import (
    OpenMRSAccessError,
    OpenMRSAuthError,
    OpenMRSConfigError,
    OpenMRSError,
    OpenMRSNotRetryable,
    TransientOpenMRSError,
)
from tm2_pipeline.openmrs.rest_conditions import RestConditions

BASE = "https://emr.example.org/openmrs"
IDENTIFIER = "91-3229-3771-7516"
PASSWORD = "s3cret-Pass"
LOGGED_IN = {"authenticated": True, "user": {"username": "clerk"}, "locale": "en", "allowedLocales": ["en"]}


def config(**overrides) -> ClientConfig:
    options = {
        "base_url": BASE,
        "username": "clerk",
        "password": PASSWORD,
        "max_attempts": 4,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.02,
        **overrides,
    }
    return ClientConfig(**options)


class Script:
    """A fake OpenMRS: `route(request) -> Response`, every request kept for assertions."""

    def __init__(self, route: Callable[[httpx.Request], httpx.Response]) -> None:
        self.route = route
        self.requests: list[httpx.Request] = []
        self.waits: list[float] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.route(request)

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    def client(self, **overrides) -> OpenMRSClient:
        return OpenMRSClient(
            config(**overrides), transport=httpx.MockTransport(self.handler), sleep=self.sleep
        )

    def paths(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.endswith(path)]


def session_ok(request: httpx.Request) -> httpx.Response | None:
    if request.url.path.endswith("/session"):
        return httpx.Response(200, json=LOGGED_IN, headers={"Set-Cookie": "JSESSIONID=ABC; Path=/openmrs"})
    return None


def run(coroutine):
    return asyncio.run(coroutine)


def test_logs_in_once_and_reuses_the_session_cookie() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        return session_ok(request) or httpx.Response(200, json={"results": [{"uuid": "p-1"}]})

    script = Script(route)

    async def scenario() -> list[list[str]]:
        async with script.client() as client:
            return [await client.patient_uuids(f"MRN-{n}") for n in range(3)]

    assert run(scenario()) == [["p-1"]] * 3
    logins = script.paths("/session")
    assert len(logins) == 1 and logins[0].headers["Authorization"].startswith("Basic ")
    lookups = script.paths("/patient")
    assert all("Authorization" not in r.headers and "JSESSIONID=ABC" in r.headers["Cookie"] for r in lookups)
    assert lookups[0].url.path == "/openmrs/ws/rest/v1/patient"


def test_patient_lookups_are_cached_for_the_run() -> None:
    script = Script(lambda r: session_ok(r) or httpx.Response(200, json={"results": [{"uuid": "p-1"}]}))

    async def scenario() -> None:
        async with script.client() as client:
            await asyncio.gather(*(client.patient_uuids(IDENTIFIER) for _ in range(5)))

    run(scenario())
    assert len(script.paths("/patient")) == 1


def test_refused_credentials_raise_once_naming_the_user_not_the_password() -> None:
    script = Script(lambda r: httpx.Response(200, json={"authenticated": False, "locale": "en"}))

    async def scenario() -> list[BaseException]:
        async with script.client() as client:
            errors = []
            for _ in range(3):
                with pytest.raises(OpenMRSAuthError) as caught:
                    await client.patient_uuids(IDENTIFIER)
                errors.append(caught.value)
            return errors

    errors = run(scenario())
    assert len(script.paths("/session")) == 1, "a refused login must never be repeated in the same run"
    assert "'clerk'" in str(errors[0]) and PASSWORD not in str(errors[0])
    assert "(GET /session answered authenticated: false)" in str(errors[0])  # was "(answer 200)"
    assert issubclass(OpenMRSAuthError, OpenMRSNotRetryable)


@pytest.mark.parametrize(
    ("status", "headers"), [(404, {}), (302, {"Location": "https://emr.example.org/openmrs/login.htm"})]
)
def test_a_login_url_that_is_not_the_rest_api_is_a_configuration_error(status, headers) -> None:
    # Not an answer about the credentials: saying "rejected the credentials" would send a person to
    # reset a password that works.
    script = Script(lambda r: httpx.Response(status, headers=headers, text="<html>Not Found</html>"))

    async def scenario() -> None:
        async with script.client() as client:
            await client.ensure_session()

    with pytest.raises(OpenMRSConfigError) as caught:
        run(scenario())
    message = str(caught.value)
    assert message.startswith(f"GET {BASE}/ws/rest/v1/session answered {status}")
    assert "OPENMRS_BASE_URL to the OpenMRS webapp root" in message and "credentials" not in message
    assert len(script.paths("/session")) == 1


def test_a_404_at_a_re_login_is_transient_the_url_worked_before() -> None:
    # OpenMRS redeploying (Tomcat answers 404 meanwhile) ends the session: not a configuration error.
    logins: list[int] = []

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/session"):
            logins.append(1)
            if len(logins) == 2:
                return httpx.Response(404, text="<html>Not Found</html>")
            return session_ok(request)
        return httpx.Response(401 if len(logins) == 1 else 200, json={"results": []})

    script = Script(route)

    async def scenario() -> list[str]:
        async with script.client() as client:
            return await client.patient_uuids(IDENTIFIER)

    assert run(scenario()) == []  # the re-login was retried (not a configuration error), then it worked
    assert len(logins) == 3 and script.waits  # first login, the 404, the retry after a wait


@pytest.mark.parametrize("given", [f"{BASE}/ws/rest/v1", f"{BASE}/ws/rest/v1/", f"{BASE}/"])
def test_a_base_url_given_with_the_rest_path_means_the_webapp_root(given: str) -> None:
    assert (config(base_url=given).server, config(base_url=given).rest_base) == (BASE, f"{BASE}/ws/rest/v1")


def test_a_missing_privilege_stops_the_run() -> None:
    refusal = {
        "error": {"message": "User is logged in but doesn't have the relevant privilege [Get Patients]"}
    }
    script = Script(lambda r: session_ok(r) or httpx.Response(403, json=refusal))

    async def scenario() -> None:
        async with script.client() as client:
            await client.patient_uuids(IDENTIFIER)

    with pytest.raises(OpenMRSAccessError, match="lacks a privilege for patient lookup"):
        run(scenario())
    assert issubclass(OpenMRSAccessError, OpenMRSNotRetryable)


@pytest.mark.parametrize("status", [403, 400])
@pytest.mark.parametrize("identifier", ["MRN-01001", "PHI CANARY/7", 'PHI CANARY X,WAF"9'])
@pytest.mark.parametrize("page", [str, str.lower, html.escape], ids=["as_sent", "lower_case", "html_escaped"])
def test_a_refusal_echoing_the_request_line_never_quotes_the_identifier(
    status: int, identifier: str, page: Callable[[str], str]
) -> None:
    # A gateway or WAF in front of OpenMRS that quotes the blocked request, query string included;
    # one that re-cases or HTML-escapes what it quotes leaked the identifier before (an audit).
    def route(request: httpx.Request) -> httpx.Response:
        if answer := session_ok(request):
            return answer
        quoted = page(f"Request blocked by policy: GET {request.url.raw_path.decode()} ({identifier})")
        return httpx.Response(status, text=f"<html><body><p>{quoted}</p></body></html>")

    script = Script(route)

    async def scenario() -> None:
        async with script.client() as client:
            await client.patient_uuids(identifier)

    with pytest.raises(OpenMRSError) as caught:
        run(scenario())
    message = str(caught.value)
    assert "blocked by policy: get /openmrs/ws/rest/v1/patient?identifier=[redacted]" in message.lower()
    assert not any(part in message.lower() for part in ("mrn", "canary", "01001", "waf"))


def test_a_stale_session_gets_one_fresh_login_then_stops() -> None:
    state = {"logins": 0}

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/session"):
            state["logins"] += 1
            return session_ok(request)
        return httpx.Response(401, html="<html><p>Session timed out</p></html>")

    script = Script(route)

    async def scenario() -> None:
        async with script.client() as client:
            await client.patient_uuids(IDENTIFIER)

    with pytest.raises(OpenMRSAuthError, match="again after a fresh login"):
        run(scenario())
    assert state["logins"] == 2
    assert len(script.paths("/patient")) == 2


def test_each_session_expiry_gets_a_fresh_login_once_the_last_one_worked() -> None:
    # OpenMRS restarted twice during a long run: each time the session ends, once.
    answers = iter([None, httpx.Response(401, html="<p>Session timed out</p>")] * 2)

    def route(request: httpx.Request) -> httpx.Response:
        return session_ok(request) or next(answers, None) or httpx.Response(200, json={"results": []})

    script = Script(route)

    async def scenario() -> None:
        async with script.client() as client:
            for number in range(3):  # three patients (lookups are remembered per identifier)
                assert await client.patient_uuids(f"{IDENTIFIER}{number}") == []

    run(scenario())
    assert len(script.paths("/session")) == 3 and len(script.paths("/patient")) == 5


def test_a_session_timeout_is_recovered_transparently() -> None:
    answers = iter([httpx.Response(401, html="<p>Session timed out</p>")])

    def route(request: httpx.Request) -> httpx.Response:
        return session_ok(request) or next(answers, None) or httpx.Response(200, json={"results": []})

    script = Script(route)

    async def scenario() -> list[str]:
        async with script.client() as client:
            return await client.patient_uuids(IDENTIFIER)

    assert run(scenario()) == []
    assert len(script.paths("/session")) == 2


def test_a_re_login_that_meets_an_outage_does_not_use_up_the_runs_re_login() -> None:
    state = {"valid": False, "expired": False, "failing_logins": 0}

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/session"):
            if state["failing_logins"]:
                state["failing_logins"] -= 1
                return httpx.Response(503)
            state["valid"] = True
            return session_ok(request)
        if not state["expired"]:  # the session expires, and OpenMRS is down for a while
            state.update(expired=True, valid=False, failing_logins=4)
        if not state["valid"]:
            return httpx.Response(401)
        return httpx.Response(200, json={"results": [{"uuid": "p"}]})

    script = Script(route)

    async def scenario() -> list[str]:
        async with script.client() as client:
            with pytest.raises(TransientOpenMRSError):  # four logins answered 503: this record waits
                await client.patient_uuids("MRN-1")
            return await client.patient_uuids("MRN-2")  # OpenMRS is back: one fresh login, no stop

    assert run(scenario()) == ["p"]
    assert len(script.paths("/session")) == 1 + 4 + 1


@pytest.mark.parametrize(
    ("status", "wait"),
    [(503, "7"), (429, "2")],  # OpenMRS starting up; a rate limiter in front of it (not a rejection)
)
def test_retry_after_is_honoured_and_retried(status: int, wait: str) -> None:
    answers = iter([httpx.Response(status, headers={"Retry-After": wait}, html="<h1>later</h1>")])

    def route(request: httpx.Request) -> httpx.Response:
        return (
            session_ok(request)
            or next(answers, None)
            or httpx.Response(200, json={"results": [{"uuid": "p"}]})
        )

    script = Script(route)

    async def scenario() -> list[str]:
        async with script.client() as client:
            async for attempt in client.retrying():
                with attempt:
                    return await client.patient_uuids(IDENTIFIER)
        return []

    assert run(scenario()) == ["p"]
    assert script.waits == [float(wait)]


def test_retry_after_is_capped_and_attempts_are_bounded() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        return session_ok(request) or httpx.Response(503, headers={"Retry-After": "3600"})

    script = Script(route)

    async def scenario() -> None:
        async with script.client(retry_after_max_s=2.0) as client:
            async for attempt in client.retrying():
                with attempt:
                    await client.patient_uuids(IDENTIFIER)

    with pytest.raises(TransientOpenMRSError):
        run(scenario())
    assert script.waits == [2.0, 2.0, 2.0]  # max_attempts=4: three waits, capped
    assert len(script.paths("/patient")) == 4


def test_backoff_without_retry_after_is_jittered_and_capped() -> None:
    script = Script(lambda r: session_ok(r) or httpx.Response(502, html="<h1>502 Bad Gateway</h1>"))

    async def scenario() -> None:
        async with script.client(max_attempts=6, backoff_initial_s=0.5, backoff_max_s=1.0) as client:
            async for attempt in client.retrying():
                with attempt:
                    await client.patient_uuids(IDENTIFIER)

    with pytest.raises(TransientOpenMRSError, match="502"):
        run(scenario())
    assert len(script.waits) == 5 and all(0 <= wait <= 1.0 for wait in script.waits)
    assert len(set(script.waits)) > 1


def test_a_400_on_post_is_returned_not_retried() -> None:
    refusal = {"error": {"message": "Some properties are not allowed to be set: encounter", "code": "x"}}
    script = Script(lambda r: session_ok(r) or httpx.Response(400, json=refusal))

    async def scenario():
        async with script.client() as client:
            return await RestConditions(client).create({"uuid": "c", "patient": "p"})

    result = run(scenario())
    assert (result.ok, result.status) == (False, 400)
    assert result.message == "Some properties are not allowed to be set: encounter"
    assert len(script.paths("/condition")) == 1 and script.waits == []


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
def test_gateway_errors_on_post_are_transient(status: int) -> None:
    script = Script(lambda r: session_ok(r) or httpx.Response(status, html="<h1>gateway</h1>"))

    async def scenario():
        async with script.client() as client:
            return await RestConditions(client).create({"uuid": "c"})

    with pytest.raises(TransientOpenMRSError) as caught:
        run(scenario())
    assert caught.value.status == status and caught.value.method == "POST"
    # After a gateway passed the request on, OpenMRS may still write it: its outcome is in doubt.
    assert caught.value.in_doubt == (status in (502, 504))


def test_transport_failures_are_transient_and_never_show_the_identifier(caplog) -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if session := session_ok(request):
            return session
        raise httpx.ReadTimeout(f"timed out reading {request.url}", request=request)

    script = Script(route)

    async def scenario() -> None:
        async with script.client() as client:
            await client.patient_uuids(IDENTIFIER)

    with caplog.at_level(logging.DEBUG), pytest.raises(TransientOpenMRSError) as caught:
        run(scenario())
    assert str(caught.value) == "patient lookup: timed out (ReadTimeout)"
    assert caught.value.in_doubt  # sent, then no answer
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert IDENTIFIER not in caplog.text
    assert "3229" not in json.dumps([record.getMessage() for record in caplog.records])


@pytest.mark.parametrize("page_limit", [100, 25])  # 25: an administrator lowered maxResultsAbsolute
def test_condition_lists_follow_every_page(page_limit: int) -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if session := session_ok(request):
            return session
        start, limit = int(request.url.params["startIndex"]), int(request.url.params["limit"])
        if limit > page_limit:
            return httpx.Response(500, json={"error": {"message": "limit is above the maximum"}})
        items = [{"uuid": f"c-{n}"} for n in range(start, min(start + limit, 230))]
        links = [{"rel": "next", "uri": "..."}] if start + limit < 230 else []
        return httpx.Response(200, json={"results": items, "links": links})

    script = Script(route)

    async def scenario() -> list[dict]:
        async with script.client(page_limit=page_limit) as client:
            return await RestConditions(client).of_patient("p-1")

    assert [c["uuid"] for c in run(scenario())] == [f"c-{n}" for n in range(230)]
    assert len(script.paths("/condition")) == -(-230 // page_limit)


@pytest.mark.parametrize(
    ("base_url", "allowed"),
    [
        ("http://emr.example.org/openmrs", False),
        ("http://127.0.0.1:8080/openmrs", True),
        ("http://localhost/openmrs", True),
        ("http://[::1]:80/openmrs", True),
        ("https://emr.example.org/o", True),
    ],
)
def test_basic_auth_over_plain_http_is_refused_off_this_machine(base_url: str, allowed: bool) -> None:
    if allowed:
        assert config(base_url=base_url).rest_base.endswith("/ws/rest/v1")
        return
    with pytest.raises(OpenMRSConfigError, match=r"plain http to emr\.example\.org"):
        config(base_url=base_url)
    assert config(base_url=base_url, allow_insecure=True).server == base_url


def test_credentials_in_the_url_are_refused_and_never_echoed() -> None:
    with pytest.raises(OpenMRSConfigError) as caught:
        config(base_url="https://clerk:hunter2@emr.example.org/openmrs")
    assert "hunter2" not in str(caught.value)
    assert PASSWORD not in repr(config())


def test_httpx_request_logging_is_silenced() -> None:
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("httpcore").getEffectiveLevel() >= logging.WARNING


SOURCE_UUID = "src-tm2"


def concept_listing(
    concepts: list[tuple[str, list[tuple[str, str]]]],
    *,
    retired: frozenset = frozenset(),
    total_count: bool = True,
):
    """A fake `GET /concept?source=` answer: (uuid, [(source uuid, code)]) per concept, paged by 100."""

    def route(request: httpx.Request) -> httpx.Response:
        if session := session_ok(request):
            return session
        if "/conceptsource/" in request.url.path:
            return httpx.Response(200, json={"uuid": SOURCE_UUID, "name": "ICD-11-TM2", "retired": False})
        params = request.url.params
        assert request.url.path.endswith("/concept") and params["source"] == SOURCE_UUID
        assert "code" not in params and params["v"].startswith("custom:(")
        start = int(params["startIndex"])
        page = [
            {
                "uuid": uuid,
                "retired": uuid in retired,
                "mappings": [
                    {"conceptReferenceTerm": {"code": code, "conceptSource": {"uuid": source}}}
                    for source, code in mappings
                ],
            }
            for uuid, mappings in concepts[start : start + 100]
        ]
        body: dict = {"results": page}
        if start == 0 and total_count:
            body["totalCount"] = len(concepts)
        if start + 100 < len(concepts):
            body["links"] = [{"rel": "next", "uri": "..."}]
        return httpx.Response(200, json=body)

    return route


def test_concepts_come_from_one_paged_listing_of_the_source_for_the_whole_run() -> None:
    concepts = [(f"k-{n}", [(SOURCE_UUID, f"SK{n:03d}")]) for n in range(150)]
    concepts += [
        ("k-twin-a", [(SOURCE_UUID, "SM00")]),
        ("k-twin-b", [(SOURCE_UUID, "sm00")]),  # codes compare case-insensitively, as in OpenMRS
        ("k-other-source", [("src-snomed", "SM10")]),  # a mapping to another source is not ours
        ("k-retired", [(SOURCE_UUID, "SM20")]),
        ("k-two-codes", [(SOURCE_UUID, "SM30"), (SOURCE_UUID, "SM31"), ("src-snomed", "SK000")]),
    ]
    script = Script(concept_listing(concepts, retired=frozenset({"k-retired"})))
    codes = ["SK000", "sk149", "SM00", "SM10", "SM20", "SM30", "SM31", "SX99"]

    async def scenario() -> list[str | None]:
        async with script.client() as client:
            assert await client.concept_source_exists()
            return list(await asyncio.gather(*(client.concept_uuid(code) for code in codes)))

    assert run(scenario()) == ["k-0", "k-149", None, None, None, "k-two-codes", "k-two-codes", None]
    listing = script.paths("/concept")
    assert [r.url.params["startIndex"] for r in listing] == ["0", "100"]  # 155 concepts: two pages, once


@pytest.mark.parametrize(("total_count", "pages_read"), [(True, 1), (False, 21)])
def test_a_source_too_large_to_list_is_asked_code_by_code(total_count: bool, pages_read: int) -> None:
    concepts = [(f"k-{n}", [(SOURCE_UUID, f"C{n}")]) for n in range(2001)]
    listing = concept_listing(concepts, total_count=total_count)

    def route(request: httpx.Request) -> httpx.Response:
        if "code" in request.url.params:
            code = request.url.params["code"]
            return httpx.Response(200, json={"results": [{"uuid": f"by-code-{code}"}]})
        return listing(request)

    script = Script(route)

    async def scenario() -> list[str | None]:
        async with script.client() as client:
            return [await client.concept_uuid(code) for code in ("C1", "C2", "C1")]

    assert run(scenario()) == ["by-code-C1", "by-code-C2", "by-code-C1"]
    by_code = [r for r in script.paths("/concept") if "code" in r.url.params]
    assert [r.url.params["code"] for r in by_code] == ["C1", "C2"]  # still cached per code
    # Pages until the size shows (the first one, when the server counts), then one lookup per code.
    assert len(script.paths("/concept")) == pages_read + 2


def test_a_404_page_on_a_lookup_is_transient_not_an_answer_about_the_patient() -> None:
    # OpenMRS redeploying behind Tomcat or a gateway: the webapp's URLs answer an HTML 404 for a while.
    def route(request: httpx.Request) -> httpx.Response:
        return session_ok(request) or httpx.Response(404, html="<html><h1>HTTP Status 404</h1></html>")

    script = Script(route)

    async def scenario() -> None:
        async with script.client() as client:
            await client.patient_uuids(IDENTIFIER)

    with pytest.raises(TransientOpenMRSError, match="answered 404 with a page"):
        run(scenario())


def test_a_refused_connection_names_the_host_and_is_known_not_to_have_reached_openmrs() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    script = Script(route)

    async def scenario() -> None:
        async with script.client() as client:
            await client.ensure_session()

    with pytest.raises(TransientOpenMRSError) as caught:
        run(scenario())
    assert str(caught.value) == "login: connection to emr.example.org failed (ConnectError)"
    assert not caught.value.in_doubt
