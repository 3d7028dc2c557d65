"""The OpenMRS Dagster resource: the persisted sandbox, a real base URL, a swapped transport in a run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import httpx
import pytest
from pymongo.database import Database

from tm2_pipeline import submission_run
from tm2_pipeline.identity import condition_uuid
from tm2_pipeline.openmrs.emulator.server import SandboxServer, open_sandbox
from tm2_pipeline.openmrs.errors import OpenMRSConfigError
from tm2_pipeline.resources.mongo import MongoResource
from tm2_pipeline.resources.openmrs import OpenMRSResource
from tm2_pipeline.store.indexes import RECORDS_COLLECTION, SUBMISSIONS_COLLECTION
from tm2_pipeline.store.submissions import SubmissionLog
from tm2_pipeline_tests.openmrs_sample_records import make_record, sample_records

pytestmark = pytest.mark.integration

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_the_sandbox_keeps_its_conditions_between_runs(tmp_path: Path, mongo_db: Database) -> None:
    records = sample_records()[:25]
    first = OpenMRSResource(tm2_home=str(tmp_path)).submit(records, SubmissionLog(mongo_db), NOW)
    assert first.submitted > 0 and first.failed == 0
    assert (tmp_path / "openmrs-sandbox" / "conditions.json").exists()

    # Forget the log: only the sandbox's own memory can prevent a second copy now.
    mongo_db.drop_collection(SUBMISSIONS_COLLECTION)
    second = OpenMRSResource(tm2_home=str(tmp_path)).submit(records, SubmissionLog(mongo_db), NOW)
    assert second.submitted == 0 and second.state_counts["already_present"] == first.submitted
    with open_sandbox(tmp_path / "openmrs-sandbox") as sandbox:
        assert len(sandbox.state.conditions) == first.submitted


def test_the_sandbox_serves_fhir_mode_and_keeps_its_conditions(tmp_path: Path, mongo_db: Database) -> None:
    records = sample_records()[:25]
    sandbox_fhir = OpenMRSResource(tm2_home=str(tmp_path), api="fhir")
    first = sandbox_fhir.submit(records, SubmissionLog(mongo_db), NOW)
    assert first.submitted > 0 and first.failed == 0 and first.requests["POST"] == first.submitted

    # Forget the log: FHIR2 would take a second copy, so only the search before each create prevents it.
    mongo_db.drop_collection(SUBMISSIONS_COLLECTION)
    second = sandbox_fhir.submit(records, SubmissionLog(mongo_db), NOW)
    assert second.submitted == 0 and second.state_counts["already_present"] == first.submitted
    assert "POST" not in second.requests
    with open_sandbox(tmp_path / "openmrs-sandbox") as sandbox:
        assert len(sandbox.state.conditions) == first.submitted


def test_a_real_base_url_is_used_over_http(mongo_db: Database) -> None:
    record = make_record("MRN-01001", "SK01", "2024-01-15")
    with open_sandbox(None) as sandbox, SandboxServer(sandbox) as server:
        openmrs = OpenMRSResource(base_url=server.base_url, username="admin", password="Admin123")
        summary = openmrs.submit([record], SubmissionLog(mongo_db), NOW)
        assert summary.submitted == 1 and condition_uuid(record["_id"]) in sandbox.state.conditions
    entry = SubmissionLog(mongo_db).entries_for([record["_id"]])[record["_id"]]
    assert entry.server == server.base_url


def test_a_real_server_needs_credentials(mongo_db: Database) -> None:
    with pytest.raises(OpenMRSConfigError, match="username and a password"):
        OpenMRSResource(base_url="https://emr.example.org/openmrs").submit([], SubmissionLog(mongo_db), NOW)


LOGINS: list[httpx.Request] = []


class RefusingOpenMRS(OpenMRSResource):
    """An OpenMRS that refuses every login; the transport is a method, so it survives resource init."""

    def transport(self) -> httpx.AsyncBaseTransport:
        def refuse(request: httpx.Request) -> httpx.Response:
            LOGINS.append(request)
            return httpx.Response(200, json={"authenticated": False, "locale": "en"})

        return httpx.MockTransport(refuse)


def test_refused_credentials_fail_the_step_once_despite_its_retry_policy(
    mongo_db: Database, secantus_uri: str, tmp_path: Path
) -> None:
    LOGINS.clear()
    record = make_record("MRN-01001", "SK01", "2024-01-15")
    mongo_db[RECORDS_COLLECTION].insert_one(dict(record))

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=3))
    def openmrs_submissions(mongo: MongoResource, openmrs: OpenMRSResource) -> None:
        # What the pipeline's asset does: the error becomes a Failure there.
        submission_run.submit_stored_records([record["_id"]], mongo=mongo, openmrs=openmrs, now=NOW)

    resources = {
        "mongo": MongoResource(uri=secantus_uri, tm2_home=str(tmp_path), database_name=mongo_db.name),
        "openmrs": RefusingOpenMRS(
            base_url="https://emr.example.org/openmrs", username="clerk", password="pw-1234"
        ),
    }
    result = dg.materialize([openmrs_submissions], resources=resources, raise_on_error=False)
    assert not result.success
    assert len(LOGINS) == 1, "one login attempt in total: neither a retry nor a second login"
    failure = next(event for event in result.all_events if event.is_step_failure)
    text = str(failure.step_failure_data.error)
    assert "'clerk'" in text and "pw-1234" not in text


def test_the_sandbox_works_inside_a_dagster_run(tmp_path: Path, mongo_db: Database) -> None:
    records = sample_records()[:10]
    summaries = []

    @dg.asset
    def openmrs_submissions(openmrs: OpenMRSResource) -> None:
        summaries.append(openmrs.submit(records, SubmissionLog(mongo_db), NOW))

    resource = OpenMRSResource(tm2_home=str(tmp_path))
    assert dg.materialize([openmrs_submissions], resources={"openmrs": resource}).success
    assert summaries[0].submitted > 0 and summaries[0].failed == 0
    assert "openmrs-sandbox" in resource.target


def test_the_resource_repr_hides_the_password() -> None:
    resource = OpenMRSResource(
        base_url="https://emr.example.org/openmrs", username="clerk", password="Secret1"
    )
    assert "Secret1" not in repr(resource) and "Secret1" not in str(resource)
    assert "clerk" in repr(resource)
