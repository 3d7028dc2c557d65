"""The emulator's HTTP surface: the OpenMRS REST endpoints the pipeline uses, mounted at /openmrs/ws/rest/v1,
and FHIR2's Condition endpoints at /openmrs/ws/fhir2/R4 (`fhir.py`), both over one EmulatorState.

Authentication as OpenMRS does it: Basic on any request (a new session each time), then the
JSESSIONID cookie; wrong credentials on /session -> 200 authenticated:false; no credentials -> 401
JSON with WWW-Authenticate; an unknown JSESSIONID without Basic -> HTML 401 "Session timed out".
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from tm2_pipeline.openmrs.emulator import representations as rep
from tm2_pipeline.openmrs.emulator.auth import (
    USER_PERSON,
    USER_UUID,
    authenticate,
    emulator_state,
    with_cookie,
)
from tm2_pipeline.openmrs.emulator.custom_rep import CustomRepError
from tm2_pipeline.openmrs.emulator.fhir import fhir_routes
from tm2_pipeline.openmrs.emulator.fhir_search import SearchStore
from tm2_pipeline.openmrs.emulator.state import DuplicateUuid, EmulatorState

Handler = Callable[[Request], Awaitable[Response]]
CREATABLE = frozenset(
    {
        "uuid",
        "condition",
        "patient",
        "clinicalStatus",
        "verificationStatus",
        "onsetDate",
        "endDate",
        "additionalDetail",
    }
)
UPDATABLE = CREATABLE - {"uuid"}
CLINICAL = frozenset({"ACTIVE", "INACTIVE", "RECURRENCE", "RELAPSE", "REMISSION", "RESOLVED"})
VERIFICATION = frozenset({"PROVISIONAL", "CONFIRMED"})
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})([T ]\d{2}:\d{2}(:\d{2}(\.\d{3})?)?([+-]\d{2}:?\d{2}|Z)?)?$")


def protected(privilege: str) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            emulator_state(request).requests[f"{request.method} {handler.__name__}"] += 1
            user, failure, token = authenticate(request)
            if failure is not None:
                return failure
            if user is None:
                return rep.not_logged_in(privilege)
            return with_cookie(await handler(request), token)

        return endpoint

    return wrap


async def session(request: Request) -> Response:
    state = emulator_state(request)
    if request.method == "DELETE":
        state.sessions.pop(request.cookies.get("JSESSIONID", ""), None)
        return Response(status_code=204)
    user, failure, token = authenticate(request)
    if failure is not None:
        return failure
    body: dict[str, Any] = {
        "authenticated": user is not None,
        "locale": "en_GB",
        "allowedLocales": ["en", "en_GB"],
    }
    if user is not None:
        body.update(
            sessionLocation=None,
            currentProvider=None,
            user={
                "uuid": USER_UUID,
                "display": user,
                "username": user,
                "systemId": user,
                "userProperties": {},
                "privileges": [],
                "roles": [{"display": "System Developer"}],
                "person": dict(USER_PERSON),
            },
        )
    return with_cookie(JSONResponse(body), token)


@protected("Get Patients")
async def patients(request: Request) -> Response:
    identifier = request.query_params.get("identifier")
    if identifier is None:
        return rep.error(400, "This search is not supported here: use ?identifier=")
    view = rep.view_of(request, "ref")
    found = [rep.patient_rep(request, p, view) for p in emulator_state(request).find_patients(identifier)]
    return rep.paged(request, found)


@protected("Get Patients")
async def patient(request: Request) -> Response:
    found = emulator_state(request).patients.get(request.path_params["uuid"])
    return (
        rep.not_found()
        if found is None
        else JSONResponse(rep.patient_rep(request, found, rep.view_of(request, "default")))
    )


@protected("Get Concepts")
async def concepts(request: Request) -> Response:
    state, params = emulator_state(request), request.query_params
    if "source" in params and "code" in params:
        found = state.concepts_mapped_to(params["source"], params["code"])
    elif "source" in params:
        found = state.concepts_listed_for(params["source"])
    elif "references" in params:
        found = [
            c
            for reference in params["references"].split(",")
            for c in state.resolve_concept(reference.strip())
        ]
    else:
        return rep.error(400, "This search is not supported here: use ?source=[&code=] or ?references=")
    sources = state.sources_by_name  # built once, not once per concept listed
    try:
        items = [rep.concept_in_view(request, concept, "ref", sources) for concept in found]
    except CustomRepError as problem:
        return rep.error(400, str(problem))
    return rep.paged(request, items)


@protected("Get Concepts")
async def concept(request: Request) -> Response:
    state = emulator_state(request)
    found = state.resolve_concept(request.path_params["reference"])
    if len(found) > 1:
        return rep.error(
            500, "Multiple non-retired concepts found for mapping [null]", "org.openmrs.api.APIException:0"
        )
    if not found:
        return rep.not_found()
    try:
        return JSONResponse(rep.concept_in_view(request, found[0], "default", state.sources_by_name))
    except CustomRepError as problem:
        return rep.error(400, str(problem))


@protected("Get Concept Sources")
async def concept_sources(request: Request) -> Response:
    wanted = request.query_params.get("q", "").lower()
    found = [s for s in emulator_state(request).concept_sources if wanted in s["name"].lower()]
    return rep.paged(request, [rep.source_rep(request, s, rep.view_of(request, "ref")) for s in found])


@protected("Get Concept Sources")
async def concept_source(request: Request) -> Response:
    found = emulator_state(request).find_source(request.path_params["reference"])
    return (
        rep.not_found()
        if found is None
        else JSONResponse(rep.source_rep(request, found, rep.view_of(request, "default")))
    )


def _parse_date(name: str, value: Any) -> str | Response:
    match = _DATE.match(value) if isinstance(value, str) else None
    try:
        return date.fromisoformat(match.group(1)).isoformat() if match else _conversion_error(name, value)
    except ValueError:
        return _conversion_error(name, value)


def _conversion_error(name: str, value: Any) -> Response:
    return rep.error(
        400,
        f"Failed to convert {name} [{value!r} is not a valid value]",
        "org.openmrs.module.webservices.rest.web.ConversionUtil:0",
    )


def _condition_fields(state: EmulatorState, body: Any, *, creating: bool) -> dict[str, Any] | Response:
    """Validate a condition body; the answer is OpenMRS's for the same mistake."""
    if not isinstance(body, dict):
        return rep.error(400, "Could not read JSON: the body must be an object")
    refused = sorted(set(body) - (CREATABLE if creating else UPDATABLE))
    if refused:
        return rep.error(400, f"Some properties are not allowed to be set: {', '.join(refused)}")
    if creating and not body.get("patient"):
        return rep.error(400, "Some required properties are missing: patient")
    missing = {"condition": "Condition is required", "clinicalStatus": "Clinical status is required"}
    field_errors = {name: text for name, text in missing.items() if creating and not body.get(name)}
    if field_errors:
        return rep.invalid_submission(field_errors)
    fields: dict[str, Any] = {}
    if "uuid" in body:
        fields["uuid"] = body["uuid"]
    if "patient" in body:
        if body["patient"] not in state.patients:
            return _conversion_error("patient", body["patient"])
        fields["patient"] = body["patient"]
    if "condition" in body:
        condition = body["condition"] or {}
        coded, non_coded = condition.get("coded"), condition.get("nonCoded")
        if coded:
            matches = state.resolve_concept(coded)
            if len(matches) != 1:
                return _conversion_error("condition.coded", coded)
            coded = matches[0]["uuid"]
        elif not non_coded:
            return rep.invalid_submission({"condition": "Condition is required"})
        fields.update(coded=coded or None, nonCoded=None if coded else non_coded)
    for name, allowed in (("clinicalStatus", CLINICAL), ("verificationStatus", VERIFICATION)):
        if name in body:
            if body[name] is not None and body[name] not in allowed:
                return _conversion_error(name, body[name])
            fields[name] = body[name]
    for name in ("onsetDate", "endDate"):
        if body.get(name) is not None:
            parsed = _parse_date(name, body[name])
            if isinstance(parsed, Response):
                return parsed
            fields[name] = parsed
    if "additionalDetail" in body:
        fields["additionalDetail"] = body["additionalDetail"]
    return fields


async def _json_body(request: Request) -> Any | Response:
    try:
        return json.loads(await request.body())
    except ValueError:
        return rep.error(400, "Could not read JSON: Unexpected character [null]")


def _duplicate(uuid: str) -> Response:
    return rep.error(
        500,
        "could not execute statement; SQL [n/a]; constraint [uuid] "
        f"[Duplicate entry '{uuid}' for key 'condition.uuid']",
        "org.hibernate.exception.ConstraintViolationException:0",
    )


@protected("Get Conditions")
async def conditions(request: Request) -> Response:
    state = emulator_state(request)
    if request.method == "POST":
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        fields = _condition_fields(state, body, creating=True)
        if isinstance(fields, Response):
            return fields
        try:
            created = state.create_condition(fields)
        except DuplicateUuid:
            return _duplicate(fields["uuid"])
        return JSONResponse(rep.condition_rep(request, created, "default", state.concepts), status_code=201)
    patient_uuid = request.query_params.get("patientUuid")
    if not patient_uuid:
        return rep.error(400, "This search is not supported here: use ?patientUuid=")
    view = rep.view_of(request, "ref")
    # OpenMRS reads the flag with BooleanUtils.toBoolean: "true", "on", "yes" (any case).
    inactive = request.query_params.get("includeInactive", "").lower() in ("true", "on", "yes")
    listed = state.conditions_of(patient_uuid, include_inactive=inactive)
    found = [rep.condition_rep(request, c, view, state.concepts) for c in listed]
    return rep.paged(request, found)


@protected("Get Conditions")
async def condition(request: Request) -> Response:
    state = emulator_state(request)
    existing = state.conditions.get(request.path_params["uuid"])
    if existing is None:
        return rep.not_found()
    if request.method == "GET":
        return JSONResponse(
            rep.condition_rep(request, existing, rep.view_of(request, "default"), state.concepts)
        )
    if request.method == "DELETE":
        state.void_condition(existing, request.query_params.get("reason", "voided via REST"))
        return Response(status_code=204)
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    changes = _condition_fields(state, body, creating=False)
    if isinstance(changes, Response):
        return changes
    updated = state.update_condition(existing, changes)
    return JSONResponse(rep.condition_rep(request, updated, "default", state.concepts))


async def unknown(request: Request) -> Response:
    return rep.error(404, f"Unknown resource: {request.url.path.removeprefix(rep.REST_PREFIX)}")


def create_app(state: EmulatorState) -> Starlette:
    routes = [
        Route("/session", session, methods=["GET", "DELETE"]),
        Route("/patient", patients, methods=["GET"]),
        Route("/patient/{uuid}", patient, methods=["GET"]),
        Route("/concept", concepts, methods=["GET"]),
        Route("/concept/{reference}", concept, methods=["GET"]),
        Route("/conceptsource", concept_sources, methods=["GET"]),
        Route("/conceptsource/{reference}", concept_source, methods=["GET"]),
        Route("/condition", conditions, methods=["GET", "POST"]),
        Route("/condition/{uuid}", condition, methods=["GET", "POST", "DELETE"]),
        Route("/{path:path}", unknown, methods=["GET", "POST", "DELETE", "PUT"]),
    ]
    app = Starlette(routes=[Mount(rep.REST_PREFIX, routes=routes), *fhir_routes()])
    app.state.emulator = state
    app.state.fhir_searches = SearchStore()
    return app
