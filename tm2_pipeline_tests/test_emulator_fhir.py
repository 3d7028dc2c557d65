"""The emulator's FHIR2 Condition endpoints over real HTTP, sharing their conditions with the REST API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tm2_pipeline.openmrs.emulator.faults import FaultConfig
from tm2_pipeline.openmrs.emulator.server import Sandbox, SandboxServer, open_sandbox

pytestmark = pytest.mark.integration

ADMIN = ("admin", "Admin123")
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
NON_CODED = "http://fhir.openmrs.org/ext/non-coded-condition"
TM2_URL = "http://id.who.int/icd/release/11/mms"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with open_sandbox(None) as opened:
        yield opened


@pytest.fixture
def server(sandbox: Sandbox) -> Iterator[SandboxServer]:
    with SandboxServer(sandbox) as running:
        yield running


@pytest.fixture
def fhir(server: SandboxServer) -> Iterator[httpx.Client]:
    """A client on the FHIR base, logged in once with Basic, then by its JSESSIONID cookie."""
    with httpx.Client(base_url=server.base_url + "/ws/fhir2/R4", timeout=5) as client:
        assert client.get("/Condition", params={"_count": "0"}, auth=ADMIN).status_code == 200
        assert "JSESSIONID" in client.cookies
        yield client


@pytest.fixture
def rest(server: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url + "/ws/rest/v1", auth=ADMIN, timeout=5) as client:
        yield client


def patient(sandbox: Sandbox, identifier: str = "MRN-01001") -> str:
    return sandbox.state.find_patients(identifier)[0]["uuid"]


def concept(sandbox: Sandbox, code: str = "SK00") -> dict[str, Any]:
    return sandbox.state.concepts_mapped_to("ICD-11-TM2", code)[0]


def coding(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def resource(patient_uuid: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Condition",
        "subject": {"reference": f"Patient/{patient_uuid}", "type": "Patient"},
        "clinicalStatus": coding(CLINICAL, "active"),
        "verificationStatus": coding(VERIFICATION, "confirmed"),
        "category": [{"coding": [{"system": CATEGORY, "code": "problem-list-item"}]}],
        "extension": [{"url": NON_CODED, "valueString": "SK01 Migraine"}],
        "onsetDateTime": "2024-01-15",
        "note": [{"text": "Severity: Mild"}],
    }
    body.update(overrides)
    return body


def created(fhir: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    answer = fhir.post("/Condition", json=body, headers={"Content-Type": "application/fhir+json"})
    assert answer.status_code == 201, answer.text
    return answer.json()


def diagnostics(answer: httpx.Response) -> str:
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]["diagnostics"]


def every_page(fhir: httpx.Client, params: dict[str, str]) -> tuple[list[dict[str, Any]], list[dict]]:
    """(every resource over the pages, every bundle), following the next links."""
    bundles = [fhir.get("/Condition", params=params).json()]
    while next_link := [link["url"] for link in bundles[-1]["link"] if link["relation"] == "next"]:
        bundles.append(fhir.get(next_link[0]).json())
    return [entry["resource"] for bundle in bundles for entry in bundle.get("entry", [])], bundles


# --- authentication ------------------------------------------------------------------------------


def test_without_a_session_the_answer_is_an_html_401(server: SandboxServer, sandbox: Sandbox) -> None:
    base = server.base_url + "/ws/fhir2/R4"
    for answer in (
        httpx.get(f"{base}/Condition"),
        httpx.get(f"{base}/Condition", auth=("admin", "wrong")),
        httpx.get(f"{base}/Condition", cookies={"JSESSIONID": "0123456789ABCDEF"}),
        httpx.post(f"{base}/Condition", json=resource(patient(sandbox))),
    ):
        assert answer.status_code == 401 and answer.headers["content-type"].startswith("text/html")
        assert "Not authenticated" in answer.text
    assert sandbox.state.conditions == {}
    assert sandbox.state.requests["GET fhir_conditions"] == 3


def test_a_stale_session_cookie_is_an_html_401(fhir: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.state.expire_sessions()
    answer = fhir.get("/Condition")
    assert answer.status_code == 401 and answer.headers["content-type"].startswith("text/html")


def test_one_login_serves_both_apis(server: SandboxServer, sandbox: Sandbox) -> None:
    with httpx.Client(base_url=server.base_url, timeout=5) as client:
        assert client.get("/ws/rest/v1/session", auth=ADMIN).json()["authenticated"] is True
        assert client.get("/ws/fhir2/R4/Condition").status_code == 200
    assert sandbox.state.login_attempts["admin"] == 1


# --- create and read -----------------------------------------------------------------------------


def test_create_ignores_the_client_id_and_answers_201_with_location_and_body(
    fhir: httpx.Client, server: SandboxServer, sandbox: Sandbox
) -> None:
    body = resource(patient(sandbox), id="my-own-id")
    answer = fhir.post("/Condition", json=body, headers={"Content-Type": "application/fhir+json"})
    assert answer.status_code == 201 and answer.headers["content-type"].startswith("application/fhir+json")
    made = answer.json()
    assert made["id"] != "my-own-id" and made["id"] in sandbox.state.conditions
    assert answer.headers["Location"] == f"{server.base_url}/ws/fhir2/R4/Condition/{made['id']}/_history/1"
    assert made["meta"]["versionId"] == "1"
    assert made["subject"]["reference"] == f"Patient/{patient(sandbox)}"
    assert made["subject"]["display"].endswith(")")
    assert made["clinicalStatus"] == coding(CLINICAL, "active")
    assert made["verificationStatus"]["coding"][0]["code"] == "confirmed"
    assert made["category"][0]["coding"][0]["code"] == "problem-list-item"
    assert made["onsetDateTime"] == "2024-01-15T00:00:00+00:00"
    assert made["note"] == [{"text": "Severity: Mild"}]
    assert made["recorder"]["reference"].startswith("Practitioner/")
    # Not idempotent: the same body again is another condition.
    again = created(fhir, body)
    assert again["id"] not in (made["id"], "my-own-id") and len(sandbox.state.conditions) == 2


def test_prefer_return_minimal_answers_without_a_body(fhir: httpx.Client, sandbox: Sandbox) -> None:
    answer = fhir.post("/Condition", json=resource(patient(sandbox)), headers={"Prefer": "return=minimal"})
    assert answer.status_code == 201 and answer.content == b""
    [condition_id] = sandbox.state.conditions
    assert answer.headers["Location"].endswith(f"/Condition/{condition_id}/_history/1")


def test_read_is_200_unknown_404_voided_410(fhir: httpx.Client, rest: httpx.Client, sandbox: Sandbox) -> None:
    made = created(fhir, resource(patient(sandbox)))
    read = fhir.get(f"/Condition/{made['id']}")
    assert read.status_code == 200 and read.json() == made and read.headers["ETag"] == 'W/"1"'
    unknown = str(uuid.uuid4())
    missing = fhir.get(f"/Condition/{unknown}")
    assert missing.status_code == 404 and unknown in diagnostics(missing)
    assert rest.delete(f"/condition/{made['id']}").status_code == 204
    gone = fhir.get(f"/Condition/{made['id']}")
    assert gone.status_code == 410 and "deleted" in diagnostics(gone)


def test_delete_voids(fhir: httpx.Client, sandbox: Sandbox) -> None:
    made = created(fhir, resource(patient(sandbox)))
    assert fhir.delete(f"/Condition/{made['id']}").status_code == 200
    assert sandbox.state.conditions[made["id"]]["voided"] is True
    assert fhir.get(f"/Condition/{made['id']}").status_code == 410
    assert fhir.delete(f"/Condition/{uuid.uuid4()}").status_code == 404


def test_coded_and_non_coded_round_trips(fhir: httpx.Client, rest: httpx.Client, sandbox: Sandbox) -> None:
    migraine = concept(sandbox)
    coded = created(
        fhir, resource(patient(sandbox), extension=[], code={"coding": [{"code": migraine["uuid"]}]})
    )
    assert coded["code"]["coding"][0] == {"code": migraine["uuid"], "display": migraine["name"]}
    assert coded["code"]["text"] == migraine["name"] and "extension" not in coded
    assert rest.get(f"/condition/{coded['id']}").json()["condition"]["coded"]["uuid"] == migraine["uuid"]
    free = created(fhir, resource(patient(sandbox)))
    assert free["extension"] == [{"url": NON_CODED, "valueString": "SK01 Migraine"}] and "code" not in free
    assert rest.get(f"/condition/{free['id']}").json()["condition"] == {
        "coded": None,
        "nonCoded": "SK01 Migraine",
        "specificName": None,
    }
    assert fhir.get(f"/Condition/{free['id']}").json() == free


def test_a_coding_system_resolves_through_fhir_concept_source(fhir: httpx.Client, sandbox: Sandbox) -> None:
    migraine = concept(sandbox)
    # Without a fhir_concept_source row the system names nothing: no condition.
    no_source = fhir.post(
        "/Condition", json=resource(patient(sandbox), extension=[], code=coding(TM2_URL, "SK00"))
    )
    assert no_source.status_code == 422 and "condition is required" in diagnostics(no_source)
    sandbox.state.fhir_concept_sources[TM2_URL] = "ICD-11-TM2"
    made = created(fhir, resource(patient(sandbox), extension=[], code=coding(TM2_URL, "SK00")))
    assert sandbox.state.conditions[made["id"]]["coded"] == migraine["uuid"]
    assert made["code"]["coding"] == [
        {"code": migraine["uuid"], "display": migraine["name"]},
        {"system": TM2_URL, "code": "SK00"},
    ]
    for token, found in ((f"{TM2_URL}|SK00", 1), (migraine["uuid"], 1), ("http://elsewhere|SK00", 0)):
        bundle = fhir.get("/Condition", params={"patient": patient(sandbox), "code": token}).json()
        assert bundle["total"] == found, token


def test_clinical_status_is_active_or_inactive_as_in_fhir2(
    fhir: httpx.Client, rest: httpx.Client, sandbox: Sandbox
) -> None:
    body = {"patient": patient(sandbox), "condition": {"nonCoded": "x"}, "clinicalStatus": "RESOLVED"}
    over_rest = rest.post("/condition", json=body).json()["uuid"]
    assert fhir.get(f"/Condition/{over_rest}").json()["clinicalStatus"] == coding(CLINICAL, "inactive")
    resolved = created(fhir, resource(patient(sandbox), clinicalStatus=coding(CLINICAL, "resolved")))
    assert sandbox.state.conditions[resolved["id"]]["clinicalStatus"] == "INACTIVE"
    listed = fhir.get(
        "/Condition", params={"patient": patient(sandbox), "clinical-status": "inactive"}
    ).json()
    assert [e["resource"]["id"] for e in listed["entry"]] == [resolved["id"]]  # RESOLVED is not INACTIVE


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"clinicalStatus": coding("http://example.org/status", "active")}, 400, "clinicalStatus"),
        ({"clinicalStatus": {"coding": [{"code": "active"}]}}, 400, "clinicalStatus"),
        ({"clinicalStatus": None}, 422, "clinical status is required"),
        ({"extension": [], "code": {"coding": [{"code": "no-such-concept"}]}}, 400, "no-such-concept"),
        ({"extension": []}, 422, "condition is required"),
        ({"subject": {"reference": f"Patient/{uuid.uuid4()}"}}, 422, "Patient"),
        ({"subject": {"reference": "Practitioner/abc"}}, 400, "Practitioner"),
        ({"resourceType": "Patient"}, 400, "Incorrect resource type"),
        ({"category": [{"coding": [{"system": CATEGORY, "code": "encounter-diagnosis"}]}]}, 400, "encounter"),
        ({"category": [{"coding": [{"system": "http://example.org", "code": "x"}]}]}, 400, "category"),
        ({"onsetDateTime": "15/01/2024"}, 400, "Invalid date/time"),
    ],
)
def test_invalid_conditions_are_refused_and_nothing_is_written(
    fhir: httpx.Client, sandbox: Sandbox, change: dict[str, Any], status: int, says: str
) -> None:
    body = {
        name: value for name, value in {**resource(patient(sandbox)), **change}.items() if value is not None
    }
    answer = fhir.post("/Condition", json=body)
    assert answer.status_code == status and says.lower() in diagnostics(answer).lower()
    assert sandbox.state.conditions == {}


def test_an_unreadable_body_is_a_400_operation_outcome(fhir: httpx.Client) -> None:
    answer = fhir.post("/Condition", content=b"{not json", headers={"Content-Type": "application/fhir+json"})
    assert answer.status_code == 400 and "Failed to parse" in diagnostics(answer)


def test_an_unknown_fhir_path_is_a_json_404(fhir: httpx.Client) -> None:
    answer = fhir.get("/Patient/123")
    assert answer.status_code == 404 and "Unknown resource type 'Patient'" in diagnostics(answer)
    assert fhir.patch("/Condition/123", json={}).status_code == 400


# --- update --------------------------------------------------------------------------------------


def test_update_changes_the_condition_in_place(
    fhir: httpx.Client, rest: httpx.Client, sandbox: Sandbox
) -> None:
    made = created(fhir, resource(patient(sandbox)))
    changed = {
        **made,
        "verificationStatus": coding(VERIFICATION, "provisional"),
        "note": [{"text": "Severe"}],
    }
    answer = fhir.put(f"/Condition/{made['id']}", json=changed)
    assert answer.status_code == 200
    updated = answer.json()
    assert updated["id"] == made["id"] and updated["meta"]["versionId"] == "2"
    assert updated["verificationStatus"]["coding"][0]["code"] == "provisional"
    assert fhir.get(f"/Condition/{made['id']}").json() == updated
    assert list(sandbox.state.conditions) == [made["id"]]  # no new row, nothing voided
    over_rest = rest.get(f"/condition/{made['id']}", params={"v": "full"}).json()
    assert over_rest["verificationStatus"] == "PROVISIONAL" and over_rest["additionalDetail"] == "Severe"
    assert over_rest["voided"] is False and over_rest["previousVersion"] is None
    # The same body again changes nothing: the version stays.
    assert fhir.put(f"/Condition/{made['id']}", json=changed).json()["meta"]["versionId"] == "2"
    # Onset and note absent: kept (FHIR2 sets them only when given).
    kept = {name: value for name, value in changed.items() if name not in ("onsetDateTime", "note")}
    again = fhir.put(f"/Condition/{made['id']}", json=kept).json()
    assert again["onsetDateTime"] == made["onsetDateTime"] and again["note"] == [{"text": "Severe"}]


def test_update_needs_the_urls_id_in_the_body_and_a_known_condition(
    fhir: httpx.Client, rest: httpx.Client, sandbox: Sandbox
) -> None:
    made = created(fhir, resource(patient(sandbox)))
    other = str(uuid.uuid4())
    mismatched = fhir.put(f"/Condition/{made['id']}", json={**made, "id": other})
    assert mismatched.status_code == 400 and "does not match URL ID" in diagnostics(mismatched)
    without_id = {name: value for name, value in made.items() if name != "id"}
    missing = fhir.put(f"/Condition/{made['id']}", json=without_id)
    assert missing.status_code == 400 and "must contain an ID element" in diagnostics(missing)
    unknown = fhir.put(f"/Condition/{other}", json={**made, "id": other})
    assert unknown.status_code == 404 and other in diagnostics(unknown)
    invalid = fhir.put(
        f"/Condition/{made['id']}", json={**made, "clinicalStatus": coding("http://x", "active")}
    )
    assert invalid.status_code == 400
    assert sandbox.state.conditions[made["id"]].get("version", 1) == 1
    # A voided condition is updated all the same (FHIR2 checks existence only), and stays voided.
    assert rest.delete(f"/condition/{made['id']}").status_code == 204
    revised = fhir.put(f"/Condition/{made['id']}", json={**made, "note": [{"text": "Severe"}]})
    assert revised.status_code == 200 and revised.json()["note"] == [{"text": "Severe"}]
    assert sandbox.state.conditions[made["id"]]["voided"] is True
    assert fhir.get(f"/Condition/{made['id']}").status_code == 410


# --- search and paging ---------------------------------------------------------------------------


def test_search_by_patient_and_onset_date(fhir: httpx.Client, rest: httpx.Client, sandbox: Sandbox) -> None:
    mine, theirs = patient(sandbox), patient(sandbox, "MRN-01002")
    january = [created(fhir, resource(mine, onsetDateTime="2024-01-15"))["id"] for _ in range(2)]
    february = created(fhir, resource(mine, onsetDateTime="2024-02-03T10:30:00+00:00"))["id"]
    created(fhir, resource(theirs, onsetDateTime="2024-01-15"))
    voided = created(fhir, resource(mine, onsetDateTime="2024-01-15"))["id"]
    assert rest.delete(f"/condition/{voided}").status_code == 204

    def ids(**params: str) -> list[str]:
        bundle = fhir.get("/Condition", params=params).json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        assert bundle["total"] == len(bundle.get("entry", []))
        return [entry["resource"]["id"] for entry in bundle.get("entry", [])]

    assert ids(patient=mine) == [*january, february]
    assert ids(patient=f"Patient/{mine}") == ids(subject=mine) == [*january, february]
    assert ids(patient=mine, **{"onset-date": "2024-01-15"}) == january
    assert ids(patient=mine, **{"onset-date": "eq2024-01-15"}) == january
    assert ids(patient=mine, **{"onset-date": "2024-02"}) == [february]
    assert ids(patient=mine, **{"onset-date": "ge2024-01-16"}) == [february]
    assert ids(patient=mine, **{"onset-date": "2024-01-14"}) == []
    assert ids(patient=str(uuid.uuid4())) == []
    assert len(ids()) == 4  # every patient's, voided ones never
    bad_date = fhir.get("/Condition", params={"patient": mine, "onset-date": "yesterday"})
    assert bad_date.status_code == 400


def test_paging_follows_next_links_across_pages(
    fhir: httpx.Client, server: SandboxServer, sandbox: Sandbox
) -> None:
    mine = patient(sandbox)
    made = {created(fhir, resource(mine, note=[{"text": f"n={n}"}]))["id"] for n in range(23)}
    found, bundles = every_page(fhir, {"patient": mine})
    assert [len(b.get("entry", [])) for b in bundles] == [10, 10, 3]
    assert {r["id"] for r in found} == made and len(found) == 23
    assert all(b["total"] == 23 for b in bundles)
    next_link = next(link["url"] for link in bundles[0]["link"] if link["relation"] == "next")
    assert next_link.startswith(f"{server.base_url}/ws/fhir2/R4?_getpages=")
    assert "_getpagesoffset=10" in next_link and "_count=10" in next_link
    assert all(link["relation"] != "next" for link in bundles[-1]["link"])
    assert bundles[0]["entry"][0]["fullUrl"] == f"{server.base_url}/ws/fhir2/R4/Condition/{found[0]['id']}"

    _, by_five = every_page(fhir, {"patient": mine, "_count": "5"})
    assert [len(b["entry"]) for b in by_five] == [5, 5, 5, 5, 3]
    _, at_most_100 = every_page(fhir, {"patient": mine, "_count": "500"})
    assert [len(b["entry"]) for b in at_most_100] == [23]
    expired = fhir.get("", params={"_getpages": str(uuid.uuid4()), "_getpagesoffset": "10"})
    assert expired.status_code == 410 and "does not exist" in diagnostics(expired)


# --- REST and FHIR share the conditions ----------------------------------------------------------


def test_a_condition_written_over_rest_is_read_and_updated_over_fhir(
    fhir: httpx.Client, rest: httpx.Client, sandbox: Sandbox
) -> None:
    migraine = concept(sandbox)
    body = {
        "uuid": str(uuid.uuid4()),
        "patient": patient(sandbox),
        "condition": {"coded": migraine["uuid"]},
        "clinicalStatus": "ACTIVE",
        "verificationStatus": "CONFIRMED",
        "onsetDate": "2024-03-01",
        "additionalDetail": "from REST",
    }
    assert rest.post("/condition", json=body).status_code == 201
    read = fhir.get(f"/Condition/{body['uuid']}").json()
    assert read["code"]["coding"][0]["code"] == migraine["uuid"] and read["note"] == [{"text": "from REST"}]
    assert read["onsetDateTime"].startswith("2024-03-01") and read["meta"]["versionId"] == "1"
    search = fhir.get("/Condition", params={"patient": body["patient"], "onset-date": "2024-03-01"}).json()
    assert [e["resource"]["id"] for e in search["entry"]] == [body["uuid"]]

    put = fhir.put(f"/Condition/{body['uuid']}", json={**read, "note": [{"text": "from FHIR"}]})
    assert put.status_code == 200
    assert rest.get(f"/condition/{body['uuid']}").json()["additionalDetail"] == "from FHIR"

    # REST's update makes a new version and voids this one: FHIR then finds the new one only.
    newer = rest.post(f"/condition/{body['uuid']}", json={"additionalDetail": "REST again"}).json()["uuid"]
    assert fhir.get(f"/Condition/{body['uuid']}").status_code == 410
    search = fhir.get("/Condition", params={"patient": body["patient"]}).json()
    assert [e["resource"]["id"] for e in search["entry"]] == [newer]


def test_a_fhir_update_is_persisted_through_the_journal(tmp_path: Path) -> None:
    with (
        open_sandbox(tmp_path) as sandbox,
        SandboxServer(sandbox) as server,
        httpx.Client(base_url=server.base_url + "/ws/fhir2/R4", auth=ADMIN, timeout=5) as client,
    ):
        made = created(client, resource(patient(sandbox)))
        client.put(f"/Condition/{made['id']}", json={**made, "note": [{"text": "kept"}]})
    with open_sandbox(tmp_path) as reopened:
        stored = reopened.state.conditions[made["id"]]
        assert stored["additionalDetail"] == "kept" and stored["version"] == 2


# --- faults ----------------------------------------------------------------------------------------


def test_faults_apply_to_the_fhir_paths() -> None:
    with (
        open_sandbox(None, faults=FaultConfig(rates={"error_500": 1.0})) as faulty,
        SandboxServer(faulty) as server,
    ):
        answer = httpx.get(server.base_url + "/ws/fhir2/R4/Condition", auth=ADMIN)
        assert answer.status_code == 500 and "JDBC" in diagnostics(answer)
        assert faulty.state.login_attempts["admin"] == 0
    with (
        open_sandbox(None, faults=FaultConfig(rates={"drop": 1.0})) as faulty,
        SandboxServer(faulty) as server,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        httpx.get(server.base_url + "/ws/fhir2/R4/Condition", auth=ADMIN)
