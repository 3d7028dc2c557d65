"""JSON as OpenMRS writes it: representations (ref/default/full), error bodies (REST's and FHIR's
OperationOutcome), HTML pages, paging."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode
from uuid import NAMESPACE_URL, uuid5

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from tm2_pipeline.openmrs.emulator.custom_rep import parse_custom, project

REST_PREFIX = "/openmrs/ws/rest/v1"
FHIR_PREFIX = "/openmrs/ws/fhir2/R4"
FHIR_JSON = "application/fhir+json;charset=utf-8"
REALM = 'Basic realm="OpenMRS at /ws/rest"'
DEFAULT_LIMIT = 50
MAX_LIMIT = 100


def _link(request: Request, resource: str, uuid: str) -> list[dict[str, str]]:
    base = f"{request.url.scheme}://{request.url.netloc}{REST_PREFIX}"
    return [{"rel": "self", "uri": f"{base}/{resource}/{uuid}", "resourceAlias": resource}]


def _ref(request: Request, resource: str, uuid: str, display: str) -> dict[str, Any]:
    """OpenMRS's `ref` representation, the start of every fuller one."""
    return {"uuid": uuid, "display": display, "links": _link(request, resource, uuid)}


def patient_rep(request: Request, patient: dict[str, Any], view: str) -> dict[str, Any]:
    preferred = next((i for i in patient["identifiers"] if i.get("preferred")), patient["identifiers"][0])
    name = f"{patient['givenName']} {patient['familyName']}"
    display = f"{preferred['identifier']} - {name}"
    ref = _ref(request, "patient", patient["uuid"], display)
    if view == "ref":
        return ref
    identifiers = [
        {
            "display": f"{i['identifierType']} = {i['identifier']}",
            "identifier": i["identifier"],
            "identifierType": {"display": i["identifierType"]},
            "preferred": bool(i.get("preferred")),
            "voided": False,
        }
        for i in patient["identifiers"]
    ]
    person = {
        "uuid": patient["uuid"],
        "display": name,
        "gender": patient["gender"],
        "birthdate": f"{patient['birthdate']}T00:00:00.000+0000",
        "dead": False,
    }
    return {**ref, "identifiers": identifiers, "person": person, "voided": False, "resourceVersion": "1.8"}


def concept_rep(
    request: Request, concept: dict[str, Any], view: str, sources: Mapping[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """ref, default (mappings as refs) or full (mappings at their default view); `sources` by lower-case
    name, for the mappings' reference terms."""
    ref = _ref(request, "concept", concept["uuid"], concept["name"])
    if view == "ref":
        return ref
    graph = concept_graph(request, concept, sources or {})
    if view == "full":
        mappings = [
            {
                **_ref(request, "mapping", m["uuid"], m["display"]),
                "conceptReferenceTerm": _ref(
                    request, "conceptreferenceterm", m["conceptReferenceTerm"]["uuid"], m["display"]
                ),
                "conceptMapType": _ref(
                    request, "conceptmaptype", m["conceptMapType"]["uuid"], m["conceptMapType"]["name"]
                ),
            }
            for m in graph["mappings"]
        ]
    else:
        mappings = [_ref(request, "mapping", m["uuid"], m["display"]) for m in graph["mappings"]]
    return {**graph, "mappings": mappings}


def concept_in_view(
    request: Request, concept: dict[str, Any], default: str, sources: Mapping[str, dict[str, Any]]
) -> dict[str, Any]:
    """The concept as the request's `v` asks (ref, default, full or custom:(...)); raises
    CustomRepError for a custom view it cannot serve."""
    fields = parse_custom(request.query_params.get("v", ""))
    if fields is not None:
        return project(concept_graph(request, concept, sources), fields)
    return concept_rep(request, concept, view_of(request, default), sources)


def concept_graph(
    request: Request, concept: dict[str, Any], sources: Mapping[str, dict[str, Any]]
) -> dict[str, Any]:
    """Every property of a concept, nested resources whole: what a custom view picks from."""
    return {
        **_ref(request, "concept", concept["uuid"], concept["name"]),
        "name": {"display": concept["name"], "name": concept["name"], "locale": "en"},
        "datatype": {"display": concept.get("datatype", "N/A")},
        "conceptClass": {"display": concept.get("conceptClass", "Diagnosis")},
        "retired": bool(concept.get("retired")),
        "mappings": [_mapping_graph(request, concept, m, sources) for m in concept["mappings"]],
        "resourceVersion": "2.0",
    }


def _mapping_graph(
    request: Request, concept: dict[str, Any], mapping: dict[str, Any], sources: Mapping[str, dict[str, Any]]
) -> dict[str, Any]:
    source = sources.get(mapping["source"].lower()) or {"uuid": None, "name": mapping["source"]}
    # OpenMRS shows a mapping as "<source name>: <code>" (+ " (<term name>)" when the term has one).
    display = f"{source['name']}: {mapping['code']}"
    term_uuid = str(uuid5(NAMESPACE_URL, f"term:{source['name']}:{mapping['code']}"))
    map_type = mapping.get("mapType", "SAME-AS")
    term = {
        **_ref(request, "conceptreferenceterm", term_uuid, display),
        "code": mapping["code"],
        "name": None,
        "conceptSource": source_rep(request, source, "default") if source["uuid"] else None,
        "retired": False,
    }
    return {
        **_ref(request, "mapping", str(uuid5(NAMESPACE_URL, f"map:{concept['uuid']}:{term_uuid}")), display),
        "conceptReferenceTerm": term,
        "conceptMapType": {
            **_ref(request, "conceptmaptype", str(uuid5(NAMESPACE_URL, f"maptype:{map_type}")), map_type),
            "name": map_type,
        },
    }


def source_rep(request: Request, source: dict[str, Any], view: str) -> dict[str, Any]:
    ref = _ref(request, "conceptsource", source["uuid"], source["name"])
    if view == "ref":
        return ref
    return {
        **ref,
        "name": source["name"],
        "description": source.get("description"),
        "hl7Code": source.get("hl7Code"),
        "uniqueId": source.get("uniqueId"),
        "retired": False,
    }


def _date(value: str | None) -> str | None:
    return f"{value[:10]}T00:00:00.000+0000" if value else None


def condition_rep(
    request: Request, condition: dict[str, Any], view: str, concepts: dict[str, Any]
) -> dict[str, Any]:
    coded = concepts.get(condition["coded"]) if condition.get("coded") else None
    display = coded["name"] if coded else condition.get("nonCoded") or ""
    ref = _ref(request, "condition", condition["uuid"], display)
    if view == "ref":
        return ref
    previous = condition.get("previousVersion")
    rep = {
        **ref,
        "condition": {
            "coded": concept_rep(request, coded, "ref") if coded else None,
            "nonCoded": condition.get("nonCoded"),
            "specificName": None,
        },
        "patient": {"uuid": condition["patient"], "links": _link(request, "patient", condition["patient"])},
        "clinicalStatus": condition.get("clinicalStatus"),
        "verificationStatus": condition.get("verificationStatus"),
        "previousVersion": {"uuid": previous, "links": _link(request, "condition", previous)}
        if previous
        else None,
        "onsetDate": _date(condition.get("onsetDate")),
        "endDate": _date(condition.get("endDate")),
        "additionalDetail": condition.get("additionalDetail"),
        "voided": condition["voided"],
        "resourceVersion": "2.2",
    }
    if view == "full":
        rep["auditInfo"] = {
            "dateCreated": condition.get("dateCreated"),
            "voidReason": condition.get("voidReason"),
        }
    return rep


def view_of(request: Request, default: str) -> str:
    view = request.query_params.get("v", default)
    return view if view in ("ref", "default", "full") else default


# --- errors --------------------------------------------------------------------------------------


def error(
    status: int, message: str, code: str = "org.openmrs.module.webservices.rest.web.RestUtil:0", **extra: Any
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "code": code, "detail": "", **extra}}, status_code=status
    )


def not_found() -> JSONResponse:
    return error(
        404,
        "Object with given uuid doesn't exist [null]",
        "org.openmrs.module.webservices.rest.web.resource.impl.BaseDelegatingResource:744",
    )


def invalid_submission(field_errors: dict[str, str]) -> JSONResponse:
    fields = {name: [{"code": f"{name}.required", "message": text}] for name, text in field_errors.items()}
    return error(
        400,
        "Invalid Submission",
        "webservices.rest.error.invalid.submission",
        globalErrors=[],
        fieldErrors=fields,
    )


def not_logged_in(privilege: str = "Get Patients") -> JSONResponse:
    response = error(
        401,
        f"User is not logged in [Privileges required: {privilege}]",
        "org.openmrs.api.context.Context:196",
    )
    response.headers["WWW-Authenticate"] = REALM
    return response


def fhir_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers, media_type=FHIR_JSON)


def operation_outcome(
    status: int, diagnostics: str, severity: str = "error", code: str = "processing"
) -> Response:
    """How HAPI (FHIR2) answers an error: an OperationOutcome with one issue."""
    issue = {"severity": severity, "code": code, "diagnostics": diagnostics}
    return fhir_json({"resourceType": "OperationOutcome", "issue": [issue]}, status)


def html_page(status: int, title: str, text: str, headers: dict[str, str] | None = None) -> Response:
    body = f"<html><head><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>"
    return HTMLResponse(body, status_code=status, headers=headers)


def session_timed_out() -> Response:
    return html_page(401, "HTTP Status 401 – Unauthorized", "Session timed out")


# --- paging --------------------------------------------------------------------------------------


def paged(request: Request, items: list[dict[str, Any]]) -> Response:
    """`limit` (default 50, >100 is a 500 as in OpenMRS) and `startIndex`; next/prev links."""
    try:
        limit = int(request.query_params.get("limit", DEFAULT_LIMIT))
        start = int(request.query_params.get("startIndex", 0))
    except ValueError:
        return error(400, "limit and startIndex must be integers")
    if limit > MAX_LIMIT:
        return error(500, f"Maximum results limit is {MAX_LIMIT} [null]", "org.openmrs.api.APIException:0")
    limit, start = max(limit, 1), max(start, 0)
    page = items[start : start + limit]
    body: dict[str, Any] = {"results": page}
    params = dict(request.query_params)
    base = f"{request.url.scheme}://{request.url.netloc}{request.url.path}"
    links = []
    if start + limit < len(items):
        links.append({"rel": "next", "uri": f"{base}?{urlencode({**params, 'startIndex': start + limit})}"})
    if start > 0:
        links.append(
            {"rel": "prev", "uri": f"{base}?{urlencode({**params, 'startIndex': max(start - limit, 0)})}"}
        )
    if links:
        body["links"] = links
    if request.query_params.get("totalCount") == "true":
        body["totalCount"] = len(items)
    return JSONResponse(body)
