"""The OpenMRS emulator over real HTTP on 127.0.0.1: the behaviours of OpenMRS the pipeline relies on."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tm2_pipeline.openmrs.emulator.server import Sandbox, SandboxServer, open_sandbox
from tm2_pipeline.openmrs.emulator.state import LOCKOUT_FAILURES

pytestmark = pytest.mark.integration

ADMIN = ("admin", "Admin123")
PATIENT_ID = "MRN-01001"  # in the seed
AMBIGUOUS_ID = "MRN-01020"  # two patients in the seed
MAPPED_CODE = "SK00"  # every other sample code has a concept; SK00 is the first in sorted order


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with open_sandbox(None) as opened:
        yield opened


@pytest.fixture
def server(sandbox: Sandbox) -> Iterator[SandboxServer]:
    with SandboxServer(sandbox) as running:
        yield running


@pytest.fixture
def rest(server: SandboxServer) -> Iterator[httpx.Client]:
    """A logged-in client (JSESSIONID cookie) on the REST base."""
    with httpx.Client(base_url=server.base_url + "/ws/rest/v1", timeout=5) as client:
        assert client.get("/session", auth=ADMIN).json()["authenticated"] is True
        yield client


def patient_uuid(rest: httpx.Client, identifier: str = PATIENT_ID) -> str:
    return rest.get("/patient", params={"identifier": identifier, "v": "default"}).json()["results"][0][
        "uuid"
    ]


def condition_body(rest: httpx.Client, **overrides) -> dict:
    body = {
        "uuid": str(uuid.uuid4()),
        "patient": patient_uuid(rest),
        "condition": {"nonCoded": "SK01 Migraine"},
        "clinicalStatus": "ACTIVE",
        "verificationStatus": "CONFIRMED",
        "onsetDate": "2024-01-15",
        "additionalDetail": "Severity: Mild",
    }
    body.update(overrides)
    return body


# --- session -----------------------------------------------------------------------------------


def test_login_sets_a_session_cookie_that_later_requests_use(server: SandboxServer, sandbox: Sandbox) -> None:
    with httpx.Client(base_url=server.base_url + "/ws/rest/v1") as client:
        answer = client.get("/session", auth=ADMIN)
        assert answer.status_code == 200 and answer.json()["authenticated"] is True
        assert answer.json()["user"]["username"] == "admin"
        assert "JSESSIONID" in client.cookies
        assert client.get("/patient", params={"identifier": PATIENT_ID}).status_code == 200
        assert client.delete("/session").status_code == 204
    assert sandbox.state.login_attempts["admin"] == 1


def test_wrong_password_is_200_unauthenticated_and_lockout_after_seven(server: SandboxServer) -> None:
    with httpx.Client(base_url=server.base_url + "/ws/rest/v1") as client:
        for _ in range(LOCKOUT_FAILURES):
            answer = client.get("/session", auth=("admin", "wrong"))
            assert answer.status_code == 200 and answer.json()["authenticated"] is False
        # Locked: even the right password fails now.
        assert client.get("/session", auth=ADMIN).json()["authenticated"] is False


def test_no_credentials_is_401_json_with_www_authenticate(server: SandboxServer) -> None:
    answer = httpx.get(server.base_url + "/ws/rest/v1/patient", params={"identifier": PATIENT_ID})
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert answer.json()["error"]["message"].startswith("User is not logged in")


def test_unknown_session_cookie_is_an_html_session_timeout(rest: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.state.expire_sessions()
    answer = rest.get("/patient", params={"identifier": PATIENT_ID})
    assert answer.status_code == 401 and answer.headers["content-type"].startswith("text/html")
    assert "Session timed out" in answer.text


def test_basic_auth_on_any_request_works(server: SandboxServer) -> None:
    answer = httpx.get(server.base_url + "/ws/rest/v1/patient", params={"identifier": PATIENT_ID}, auth=ADMIN)
    assert answer.status_code == 200 and len(answer.json()["results"]) == 1


# --- lookups -----------------------------------------------------------------------------------


def test_patient_by_identifier_exact_missing_and_ambiguous(rest: httpx.Client) -> None:
    found = rest.get("/patient", params={"identifier": PATIENT_ID, "v": "default"}).json()["results"]
    assert len(found) == 1 and found[0]["display"].startswith("10") and "identifiers" in found[0]
    assert rest.get("/patient", params={"identifier": "MRN-99999"}).json() == {"results": []}
    assert rest.get("/patient", params={"identifier": PATIENT_ID.lower()}).json() == {"results": []}
    assert len(rest.get("/patient", params={"identifier": AMBIGUOUS_ID}).json()["results"]) == 2


def test_concept_by_source_and_code_references_and_path(rest: httpx.Client) -> None:
    by_code = rest.get("/concept", params={"source": "ICD-11-TM2", "code": MAPPED_CODE.lower()}).json()[
        "results"
    ]
    assert len(by_code) == 1
    concept = by_code[0]["uuid"]
    by_reference = rest.get("/concept", params={"references": f"ICD-11-TM2:{MAPPED_CODE}"}).json()["results"]
    assert [c["uuid"] for c in by_reference] == [concept]
    assert rest.get(f"/concept/ICD-11-TM2:{MAPPED_CODE}").json()["uuid"] == concept
    assert rest.get("/concept", params={"source": "ICD-11-TM2", "code": "SK01"}).json() == {"results": []}
    assert rest.get("/concept/ICD-11-TM2:SK01").status_code == 404


def test_concepts_listed_by_source_alone_in_a_custom_view(rest: httpx.Client) -> None:
    source = rest.get("/conceptsource/ICD-11-TM2").json()["uuid"]
    view = "custom:(uuid,retired,mappings:(conceptReferenceTerm:(code,conceptSource:(uuid))))"
    params = {"source": source, "v": view, "limit": "100", "totalCount": "true"}
    listed = rest.get("/concept", params=params).json()
    by_code = rest.get("/concept", params={"source": "ICD-11-TM2", "code": MAPPED_CODE}).json()["results"]
    [mapped] = [c for c in listed["results"] if c["uuid"] == by_code[0]["uuid"]]
    assert mapped == {
        "uuid": by_code[0]["uuid"],
        "retired": False,
        "mappings": [{"conceptReferenceTerm": {"code": MAPPED_CODE, "conceptSource": {"uuid": source}}}],
    }
    assert listed["totalCount"] == len(listed["results"]) > 10
    assert all(set(c) == {"uuid", "retired", "mappings"} for c in listed["results"])
    # The default view shows mappings as references, "<source>: <code>", with no code field.
    default = rest.get(f"/concept/{mapped['uuid']}").json()
    assert [m["display"] for m in default["mappings"]] == [f"ICD-11-TM2: {MAPPED_CODE}"]
    assert "conceptReferenceTerm" not in default["mappings"][0]
    unknown = rest.get("/concept", params={"source": source, "v": "custom:(uuid,nonsense)"})
    assert unknown.status_code == 400 and "nonsense" in unknown.json()["error"]["message"]


def test_concept_source_by_name_and_search(rest: httpx.Client) -> None:
    source = rest.get("/conceptsource/ICD-11-TM2").json()
    assert source["name"] == "ICD-11-TM2" and source["hl7Code"]
    assert rest.get(f"/conceptsource/{source['uuid']}").json()["name"] == "ICD-11-TM2"
    assert [s["display"] for s in rest.get("/conceptsource", params={"q": "TM2"}).json()["results"]] == [
        "ICD-11-TM2"
    ]
    assert rest.get("/conceptsource/NAMASTE").status_code == 404


# --- conditions --------------------------------------------------------------------------------


def test_create_with_client_uuid_then_duplicate_is_a_500_constraint(rest: httpx.Client) -> None:
    body = condition_body(rest)
    created = rest.post("/condition", json=body)
    assert created.status_code == 201 and created.json()["uuid"] == body["uuid"]
    assert created.json()["onsetDate"].startswith("2024-01-15T")
    again = rest.post("/condition", json=body)
    assert again.status_code == 500 and "constraint" in again.json()["error"]["message"]
    assert rest.get(f"/condition/{body['uuid']}").json()["uuid"] == body["uuid"]


def test_coded_condition_accepts_a_source_code_reference(rest: httpx.Client) -> None:
    body = condition_body(rest, condition={"coded": f"ICD-11-TM2:{MAPPED_CODE}"})
    created = rest.post("/condition", json=body).json()
    assert created["condition"]["coded"]["display"] and created["condition"]["nonCoded"] is None


def test_unknown_condition_is_a_404_in_openmrs_shape(rest: httpx.Client) -> None:
    answer = rest.get(f"/condition/{uuid.uuid4()}")
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == "Object with given uuid doesn't exist [null]"


def test_validation_errors(rest: httpx.Client) -> None:
    missing = rest.post("/condition", json=condition_body(rest, clinicalStatus=None))
    assert missing.status_code == 400
    assert (
        missing.json()["error"]["fieldErrors"]["clinicalStatus"][0]["message"]
        == "Clinical status is required"
    )
    encounter = rest.post("/condition", json=condition_body(rest, encounter="e-1"))
    assert encounter.status_code == 400
    assert encounter.json()["error"]["message"] == "Some properties are not allowed to be set: encounter"
    bad_date = rest.post("/condition", json=condition_body(rest, onsetDate="15/01/2024"))
    assert bad_date.status_code == 400
    no_patient = condition_body(rest)
    del no_patient["patient"]
    assert rest.post("/condition", json=no_patient).json()["error"]["message"] == (
        "Some required properties are missing: patient"
    )


def test_update_voids_the_old_version_and_links_the_new(rest: httpx.Client, sandbox: Sandbox) -> None:
    body = condition_body(rest)
    rest.post("/condition", json=body)
    unchanged = rest.post(f"/condition/{body['uuid']}", json={"additionalDetail": body["additionalDetail"]})
    assert unchanged.status_code == 200 and unchanged.json()["uuid"] == body["uuid"]
    updated = rest.post(f"/condition/{body['uuid']}", json={"additionalDetail": "Severity: Severe"})
    assert updated.status_code == 200
    new = updated.json()
    assert new["uuid"] != body["uuid"] and new["previousVersion"]["uuid"] == body["uuid"]
    old = rest.get(f"/condition/{body['uuid']}", params={"v": "full"}).json()
    assert old["voided"] is True
    # Replaying the same update on the voided version changes nothing (as OpenMRS does).
    replay = rest.post(f"/condition/{body['uuid']}", json={"additionalDetail": "Severity: Severe"}).json()
    assert replay["uuid"] == body["uuid"]
    listed = rest.get("/condition", params={"patientUuid": body["patient"], "v": "full"}).json()["results"]
    assert [c["uuid"] for c in listed] == [new["uuid"]]
    assert len(sandbox.state.conditions) == 2


def test_a_condition_marked_inactive_is_listed_only_with_include_inactive(rest: httpx.Client) -> None:
    # As OpenMRS: getActiveConditions (ACTIVE, RECURRENCE, RELAPSE) unless includeInactive=true.
    body = condition_body(rest)
    rest.post("/condition", json=body)
    inactive = rest.post(f"/condition/{body['uuid']}", json={"clinicalStatus": "INACTIVE"}).json()
    relapse = condition_body(rest, clinicalStatus="RELAPSE")
    rest.post("/condition", json=relapse)

    def listed(**params: str) -> set[str]:
        found = rest.get("/condition", params={"patientUuid": body["patient"], **params}).json()
        return {condition["uuid"] for condition in found["results"]}

    assert listed() == listed(includeInactive="false") == {relapse["uuid"]}
    assert (
        listed(includeInactive="true") == listed(includeInactive="YES") == {inactive["uuid"], relapse["uuid"]}
    )


def test_condition_list_paging_and_limit(rest: httpx.Client) -> None:
    patient = patient_uuid(rest)
    for n in range(5):
        rest.post("/condition", json=condition_body(rest, additionalDetail=f"n={n}"))
    first = rest.get("/condition", params={"patientUuid": patient, "limit": 2}).json()
    assert len(first["results"]) == 2 and [link["rel"] for link in first["links"]] == ["next"]
    middle = rest.get("/condition", params={"patientUuid": patient, "limit": 2, "startIndex": 2}).json()
    assert [link["rel"] for link in middle["links"]] == ["next", "prev"]
    last = rest.get("/condition", params={"patientUuid": patient, "limit": 2, "startIndex": 4}).json()
    assert len(last["results"]) == 1 and [link["rel"] for link in last["links"]] == ["prev"]
    assert rest.get("/condition", params={"patientUuid": patient, "limit": 101}).status_code == 500


def test_delete_voids(rest: httpx.Client) -> None:
    body = condition_body(rest)
    rest.post("/condition", json=body)
    assert rest.delete(f"/condition/{body['uuid']}").status_code == 204
    assert rest.get(f"/condition/{body['uuid']}").json()["voided"] is True
