"""The emulator's FHIR surface: FHIR2's R4 Condition endpoints, mounted at /openmrs/ws/fhir2/R4, over the
same state as the REST API (a condition written through one is read through the other).

As read in openmrs-module-fhir2: providers/r4/ConditionFhirResourceProvider (read, create, update,
delete, search), api/impl/BaseFhirService and FhirConditionServiceImpl (404 unknown, 410 voided,
update in place with the body's id required and equal to the URL's), omod's web/filter and
web/authentication (401 is the servlet container's HTML page "Not authenticated"), FhirRestServlet
(paging through `<base>?_getpages=`). Errors are OperationOutcomes. Not emulated: PATCH, history,
encounter diagnoses, XML. An update of a voided condition changes the voided row and answers 200, as
FHIR2's does (BaseFhirService.update checks existence only); a read of it is still 410.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from tm2_pipeline.openmrs.emulator.auth import authenticate, emulator_state, with_cookie
from tm2_pipeline.openmrs.emulator.fhir_resources import Refused, check_resource_type, from_fhir, to_fhir
from tm2_pipeline.openmrs.emulator.fhir_search import SearchStore, page_size, parse_query
from tm2_pipeline.openmrs.emulator.representations import FHIR_PREFIX, fhir_json, html_page, operation_outcome
from tm2_pipeline.openmrs.emulator.state import EmulatorState

Handler = Callable[[Request], Awaitable[Response]]


def fhir_protected(handler: Handler) -> Handler:
    """Counted in `state.requests`, authenticated (else the HTML 401), refusals as OperationOutcomes."""

    async def endpoint(request: Request) -> Response:
        emulator_state(request).requests[f"{request.method} {handler.__name__}"] += 1
        user, failure, token = authenticate(request)
        if failure is not None or user is None:
            return html_page(401, "HTTP Status 401 – Unauthorized", "Not authenticated")
        try:
            response = await handler(request)
        except Refused as refused:
            response = operation_outcome(refused.status, refused.message)
        return with_cookie(response, token)

    endpoint.__name__ = handler.__name__
    return endpoint


def _base(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}{FHIR_PREFIX}"


def _searches(request: Request) -> SearchStore:
    return request.app.state.fhir_searches


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as problem:
        raise Refused(400, f"Failed to parse request body as JSON resource. Error was: {problem}") from None


def _known(state: EmulatorState, condition_id: str) -> dict[str, Any]:
    """The condition, voided or not (what FHIR2's update and delete look at)."""
    found = state.conditions.get(condition_id)
    if found is None:
        raise Refused(404, f"Resource of type Condition with ID {condition_id} is not known")
    return found


def _existing(state: EmulatorState, condition_id: str) -> dict[str, Any]:
    """The condition if it is not voided (what FHIR2's read returns)."""
    found = _known(state, condition_id)
    if found["voided"]:
        raise Refused(410, f"Resource of type Condition with ID {condition_id} is gone/deleted")
    return found


def _written(request: Request, state: EmulatorState, condition: dict[str, Any], status: int) -> Response:
    """A create's or an update's answer: the resource (unless `Prefer: return=minimal`), Location, ETag."""
    resource = to_fhir(condition, state)
    version = resource["meta"]["versionId"]
    location = f"{_base(request)}/Condition/{condition['uuid']}/_history/{version}"
    headers = {"Location": location, "Content-Location": location, "ETag": f'W/"{version}"'}
    if "return=minimal" in request.headers.get("prefer", ""):
        return Response(status_code=status, headers=headers)
    return fhir_json(resource, status, headers)


def _bundle(
    request: Request,
    rows: list[dict[str, Any]],
    *,
    total: int,
    offset: int,
    count: int,
    search_id: str | None,
) -> Response:
    """A searchset page; next/previous links name the kept search (HAPI's _getpages)."""
    state, base = emulator_state(request), _base(request)

    def page_url(start: int) -> str:
        return f"{base}?_getpages={search_id}&_getpagesoffset={start}&_count={count}&_bundletype=searchset"

    links = [{"relation": "self", "url": str(request.url)}]
    if search_id and count and offset + count < total:
        links.append({"relation": "next", "url": page_url(offset + count)})
    if search_id and offset > 0:
        links.append({"relation": "previous", "url": page_url(max(offset - count, 0))})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": search_id or str(uuid4()),
        "meta": {"lastUpdated": datetime.now(UTC).isoformat(timespec="milliseconds")},
        "type": "searchset",
        "total": total,
        "link": links,
    }
    page = rows[offset : offset + count]
    if page:
        bundle["entry"] = [
            {"fullUrl": f"{base}/Condition/{c['uuid']}", "resource": to_fhir(c, state)} for c in page
        ]
    return fhir_json(bundle)


@fhir_protected
async def fhir_conditions(request: Request) -> Response:
    """POST: create (the body's id ignored, as HAPI clears it); GET: search."""
    state = emulator_state(request)
    if request.method == "POST":
        created = state.create_condition(from_fhir(await _json_body(request), state))
        return _written(request, state, created, 201)
    query = parse_query(request.query_params)
    count = page_size(request.query_params.get("_count"))
    rows = query.run(state)
    search_id = _searches(request).keep(query, len(rows)) if 0 < count < len(rows) else None
    return _bundle(request, rows, total=len(rows), offset=0, count=count, search_id=search_id)


@fhir_protected
async def fhir_condition(request: Request) -> Response:
    """GET: read; PUT: update in place; DELETE: void."""
    state, condition_id = emulator_state(request), request.path_params["id"]
    if request.method == "DELETE":
        state.void_condition(_known(state, condition_id), "Voided via FHIR API")
        return operation_outcome(200, "This resource has been deleted", "information", "informational")
    if request.method == "GET":
        resource = to_fhir(_existing(state, condition_id), state)
        return fhir_json(resource, headers={"ETag": f'W/"{resource["meta"]["versionId"]}"'})
    body = check_resource_type(await _json_body(request))
    if not body.get("id"):
        raise Refused(
            400,
            "Can not update resource, resource body must contain an ID element for update (PUT) operation",
        )
    if str(body["id"]) != condition_id:
        raise Refused(
            400,
            "Can not update resource, resource body must contain an ID element which matches the request URL "
            f'for update (PUT) operation - Resource body ID of "{body["id"]}" does not match URL ID of '
            f'"{condition_id}"',
        )
    existing = _known(state, condition_id)
    return _written(request, state, state.revise_condition(existing, from_fhir(body, state)), 200)


@fhir_protected
async def fhir_pages(request: Request) -> Response:
    """`GET <base>?_getpages=<search>&_getpagesoffset=<n>&_count=<n>`: a later page of a kept search."""
    params = request.query_params
    search_id = params.get("_getpages")
    if not search_id:
        raise Refused(
            400,
            "Invalid request: The FHIR endpoint on this server does not know how to handle GET operation[] "
            "with parameters [[]]",
        )
    kept = _searches(request).get(search_id)
    if kept is None:
        raise Refused(410, f'Search ID "{search_id}" does not exist and may have expired')
    query, total = kept
    try:
        offset = max(int(params.get("_getpagesoffset", "0")), 0)
    except ValueError:
        offset = 0
    count = page_size(params.get("_count"))
    rows = query.run(emulator_state(request))
    return _bundle(request, rows, total=total, offset=offset, count=count, search_id=search_id)


@fhir_protected
async def fhir_unknown(request: Request) -> Response:
    path = request.path_params["path"]
    kind = path.split("/")[0]
    if kind == "Condition":
        raise Refused(
            400,
            "Invalid request: The FHIR endpoint on this server does not know how to handle "
            f"{request.method} operation[{path}] with parameters [[]] (not emulated)",
        )
    raise Refused(404, f"Unknown resource type '{kind}' - Server knows how to handle: [Condition]")


def fhir_routes() -> list[BaseRoute]:
    """The routes to add to the app; its `state.fhir_searches` must be a SearchStore."""
    routes = [
        Route("/", fhir_pages, methods=["GET"]),
        Route("/Condition", fhir_conditions, methods=["GET", "POST"]),
        Route("/Condition/{id}", fhir_condition, methods=["GET", "PUT", "DELETE"]),
        Route("/{path:path}", fhir_unknown, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    return [Route(FHIR_PREFIX, fhir_pages, methods=["GET"]), Mount(FHIR_PREFIX, routes=routes)]
