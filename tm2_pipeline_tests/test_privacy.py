"""No patient identifier and no password in logs or in Dagster's event storage, whatever happens."""

import csv
import logging

import dagster as dg
import pytest
from dagster_shared.serdes import serialize_value

from tm2_pipeline.identity import normalize_patient_id
from tm2_pipeline.openmrs.emulator.server import SandboxServer, open_sandbox
from tm2_pipeline.resources.openmrs import OpenMRSResource
from tm2_pipeline_tests.pipeline_runs import SAMPLE, materialize_file

pytestmark = pytest.mark.integration

PASSWORD = "S3cret-pw-do-not-leak"


def patient_ids() -> set[str]:
    with SAMPLE.open(encoding="utf-8", newline="") as handle:
        raw = {row["patient_id"] for row in csv.DictReader(handle)}
    return {value for pid in raw for value in (pid.strip(), normalize_patient_id(pid)) if len(value) >= 6}


@pytest.mark.parametrize("api", ["rest", "fhir"])
def test_a_full_run_leaks_no_identifier_and_no_password(pipeline_resources, tmp_path, caplog, capfd, api):
    caplog.set_level(logging.DEBUG)
    sandbox_home = pipeline_resources["openmrs"].tm2_home
    pipeline_resources = {**pipeline_resources, "openmrs": OpenMRSResource(tm2_home=sandbox_home, api=api)}
    refused = tmp_path / "refused.csv"
    refused.write_text("patient_id,tm2_code\nMRN-01001,SK00\n")  # missing columns; holds an id
    with (
        open_sandbox(None) as sandbox,
        SandboxServer(sandbox) as server,
        dg.instance_for_test() as instance,
    ):
        # The emulator over real HTTP: OpenMRS answers `authenticated: false` to this password.
        wrong_password = OpenMRSResource(
            base_url=server.base_url, username="admin", password=PASSWORD, api=api
        )
        # Accepted, rejected and duplicate rows; OpenMRS refuses the login first, then accepts it.
        openmrs_error = materialize_file(SAMPLE, {**pipeline_resources, "openmrs": wrong_password}, instance)
        assert not openmrs_error.success
        ok = materialize_file(SAMPLE, pipeline_resources, instance)
        assert ok.success
        refused_run = materialize_file(refused, pipeline_resources, instance)
        assert not refused_run.success
        stored_events = [
            serialize_value(entry)
            for run in (ok, refused_run, openmrs_error)
            for entry in instance.all_logs(run.run_id)
        ]
        failure = [e for e in openmrs_error.all_events if e.is_step_failure]
        assert "rejected the credentials" in failure[0].step_failure_data.error.message

    captured = capfd.readouterr()
    haystacks = {
        "event storage": "\n".join(stored_events),
        "python logs": "\n".join(record.getMessage() for record in caplog.records),
        "stdout/stderr": captured.out + captured.err,
    }
    assert len(haystacks["event storage"]) > 10_000  # the scan has something to look at
    identifiers = patient_ids()
    assert len(identifiers) > 90
    for where, text in haystacks.items():
        leaked = sorted(pid for pid in identifiers if pid in text)
        assert leaked == [], f"patient ids in {where}: {len(leaked)}"
        assert PASSWORD not in text, f"password in {where}"
