"""The one Definitions object, loaded under each environment."""

import dagster as dg
import pytest

from tm2_pipeline.definitions import build_definitions, build_resources, defs
from tm2_pipeline.settings import SettingsError, load_settings
from tm2_pipeline_tests.pipeline_runs import ALL_CHECKS

ASSETS = {"raw_tm2_file", "validated_tm2_records", "tm2_mongo_records", "openmrs_submissions"}
CHECKS = set(ALL_CHECKS)
ENV = ("TM2_MODE", "MONGODB_URI", "OPENMRS_BASE_URL", "OPENMRS_USERNAME", "OPENMRS_PASSWORD", "TM2_HOME",
       "TM2_MONGODB_DB", "OPENMRS_CA_BUNDLE")  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TM2_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)


def test_local_definitions_hold_the_whole_lineage():
    defs = build_definitions(load_settings())
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == ASSETS
    assert {key.name for key in graph.asset_check_keys} == CHECKS
    assert defs.resolve_sensor_def("tm2_landing_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_schedule_def("nightly_openmrs_retry").job_name == "openmrs_retry"
    assert defs.resolve_job_def("ingest_tm2_file").partitions_def.name == "tm2_csv_files"
    resources = build_resources(load_settings())
    assert resources["mongo"].uri is None  # embedded store
    assert resources["openmrs"].base_url is None  # sandbox


def test_production_passes_secrets_as_env_var_references(monkeypatch):
    monkeypatch.setenv("TM2_MODE", "production")
    monkeypatch.setenv("MONGODB_URI", "mongodb+srv://svc:atlas-secret@cluster0.example.mongodb.net/")
    monkeypatch.setenv("OPENMRS_BASE_URL", "https://emr.example.org/openmrs")
    monkeypatch.setenv("OPENMRS_USERNAME", "tm2-bot")
    monkeypatch.setenv("OPENMRS_PASSWORD", "emr-secret")
    settings = load_settings()
    defs = build_definitions(settings)
    dg.Definitions.validate_loadable(defs)
    resources = build_resources(settings)
    assert resources["mongo"].uri == dg.EnvVar("MONGODB_URI")
    assert resources["openmrs"].password == dg.EnvVar("OPENMRS_PASSWORD")
    assert resources["openmrs"].base_url == "https://emr.example.org/openmrs"
    shown = repr(resources) + repr(defs.resources)
    assert "atlas-secret" not in shown and "emr-secret" not in shown


def test_production_settings_reach_the_resources(monkeypatch, tmp_path):
    # What moves a laptop setup to Atlas and a hospital's OpenMRS is settings only.
    bundle = tmp_path / "hospital-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    values = {
        "MONGODB_URI": "mongodb+srv://svc:atlas-secret@cluster0.example.mongodb.net/clinicdb",
        "OPENMRS_BASE_URL": "https://emr.example.org/openmrs/ws/rest/v1",
        "OPENMRS_USERNAME": "tm2-bot",
        "OPENMRS_PASSWORD": "emr-secret",
        "OPENMRS_CA_BUNDLE": str(bundle),
        "TM2_OPENMRS_READ_TIMEOUT_S": "90",
        "OPENMRS_API": "FHIR",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    resources = build_resources(load_settings())
    assert resources["mongo"].database_name == "clinicdb"
    openmrs = resources["openmrs"]
    assert (openmrs.ca_bundle, openmrs.read_timeout_s) == (str(bundle), 90.0)
    assert openmrs.client_config().rest_base == "https://emr.example.org/openmrs/ws/rest/v1"
    assert openmrs.client_config().fhir_base == "https://emr.example.org/openmrs/ws/fhir2/R4"
    assert openmrs.api == "fhir"


def test_production_without_endpoints_refuses_to_load(monkeypatch):
    monkeypatch.setenv("TM2_MODE", "production")
    with pytest.raises(SettingsError, match="refusing to fall back"):
        defs()  # the code location workspace.yaml loads, not only the settings
