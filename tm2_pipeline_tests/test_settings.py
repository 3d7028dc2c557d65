import os
from pathlib import Path

import pytest
from dotenv import dotenv_values

from tm2_pipeline import settings as settings_module
from tm2_pipeline.settings import SettingsError, load_settings

ALL_VARS = ("TM2_MODE", "TM2_HOME", "DAGSTER_HOME", "MONGODB_URI", "OPENMRS_BASE_URL", "TM2_LANDING_DIR",
            "OPENMRS_USERNAME", "OPENMRS_PASSWORD", "TM2_MONGO_BATCH", "TM2_TIMEZONE", "TM2_MONGODB_DB",
            "OPENMRS_CA_BUNDLE", "TM2_MONGO_WRITE_CONCERN")  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ALL_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_local_defaults_derive_from_tm2_home(monkeypatch, tmp_path):
    monkeypatch.setenv("TM2_HOME", str(tmp_path / "h"))
    settings = load_settings()
    assert settings.mode == "local"
    assert settings.dagster_home == tmp_path / "h" / "dagster"
    assert settings.landing_dir == tmp_path / "h" / "landing"
    assert settings.uses_embedded_store and settings.uses_sandbox


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "MONGODB_URI and OPENMRS_BASE_URL"),
        ({"MONGODB_URI": "mongodb://db:27017"}, "OPENMRS_BASE_URL"),
        ({"OPENMRS_BASE_URL": "https://emr/openmrs"}, "MONGODB_URI"),
    ],
)
def test_production_refuses_to_fall_back(monkeypatch, env, missing):
    monkeypatch.setenv("TM2_MODE", "production")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"requires {missing};"):
        load_settings()


def test_production_with_both_endpoints(monkeypatch):
    monkeypatch.setenv("TM2_MODE", "production")
    monkeypatch.setenv("MONGODB_URI", "mongodb+srv://u:secret@cluster.example.net/")
    monkeypatch.setenv("OPENMRS_BASE_URL", "https://emr.example.org/openmrs")
    monkeypatch.setenv("OPENMRS_USERNAME", "tm2-bot")
    monkeypatch.setenv("OPENMRS_PASSWORD", "emr-secret")
    settings = load_settings()
    assert not settings.uses_embedded_store and not settings.uses_sandbox
    assert "secret" not in repr(settings)


def test_a_real_openmrs_needs_its_credentials(monkeypatch):
    monkeypatch.setenv("OPENMRS_BASE_URL", "https://emr.example.org/openmrs")
    monkeypatch.setenv("OPENMRS_PASSWORD", "")
    with pytest.raises(SettingsError, match="OPENMRS_USERNAME and OPENMRS_PASSWORD must be set too"):
        load_settings()


def test_an_empty_line_from_the_example_means_unset(monkeypatch):
    monkeypatch.setenv("OPENMRS_BASE_URL", "")
    monkeypatch.setenv("MONGODB_URI", " ")
    settings = load_settings()
    assert settings.uses_sandbox and settings.uses_embedded_store


def test_an_unknown_time_zone_is_a_settings_error(monkeypatch):
    monkeypatch.setenv("TM2_TIMEZONE", "Mars/Olympus")
    with pytest.raises(SettingsError, match="TM2_TIMEZONE='Mars/Olympus' is not a time zone"):
        load_settings()


def test_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("TM2_MONGO_BATCH", "many")
    with pytest.raises(SettingsError, match="TM2_MONGO_BATCH"):
        load_settings()


def test_dotenv_file_is_read_and_exported(monkeypatch, tmp_path):
    Path(".env").write_text("TM2_MONGODB_DB=from_dotenv\nOPENMRS_PASSWORD=pw-from-dotenv\n")
    monkeypatch.delenv("TM2_MONGODB_DB", raising=False)
    settings = load_settings()
    assert settings.mongodb_db == "from_dotenv"
    import os

    assert os.environ["OPENMRS_PASSWORD"] == "pw-from-dotenv"  # dg.EnvVar reads os.environ
    monkeypatch.delenv("OPENMRS_PASSWORD")


def test_a_dotenv_file_that_is_not_utf8_is_a_settings_error(tmp_path):
    Path(".env").write_text("TM2_MONGODB_DB=x\n", encoding="utf-16")
    with pytest.raises(SettingsError, match=r"\.env is not UTF-8 text"):
        load_settings()


def test_a_misspelt_variable_in_dotenv_is_refused_with_a_suggestion(monkeypatch):
    monkeypatch.setattr(os, "environ", os.environ.copy())  # load_dotenv exports what it reads
    Path(".env").write_text("TM2_MONGO_BACH=100\nUNRELATED_TOOL=1\n")
    with pytest.raises(SettingsError, match=r"TM2_MONGO_BACH \(did you mean TM2_MONGO_BATCH\?\)"):
        load_settings()


def test_a_misspelt_tm2_variable_in_the_environment_is_refused_too(monkeypatch):
    # Ignored, TM2_MONGODB_URI would send the records meant for Atlas to the embedded store.
    monkeypatch.setenv("TM2_MONGODB_URI", "mongodb://atlas.example.net/")
    with pytest.raises(
        SettingsError, match=r"in the environment: TM2_MONGODB_URI \(did you mean MONGODB_URI\?\)"
    ):
        load_settings()


def test_other_tools_mongodb_and_openmrs_variables_in_the_environment_are_left_alone(monkeypatch):
    monkeypatch.setenv("OPENMRS_DB_HOST", "db")  # an OpenMRS container's own settings
    monkeypatch.setenv("MONGODB_HOST", "mongo")
    assert load_settings().uses_embedded_store


def test_kubernetes_service_links_in_the_environment_are_not_settings(monkeypatch):
    # deploy/README.md's Service tm2-code-server: Kubernetes puts these into every later pod (the
    # run pods included), and a run pod refused to load the code before.
    links = {
        "TM2_CODE_SERVER_SERVICE_HOST": "10.0.0.7",
        "TM2_CODE_SERVER_SERVICE_PORT": "4266",
        "TM2_CODE_SERVER_SERVICE_PORT_GRPC": "4266",
        "TM2_CODE_SERVER_PORT": "tcp://10.0.0.7:4266",
        "TM2_CODE_SERVER_PORT_4266_TCP": "tcp://10.0.0.7:4266",
        "TM2_CODE_SERVER_PORT_4266_TCP_PROTO": "tcp",
        "TM2_CODE_SERVER_PORT_4266_TCP_PORT": "4266",
        "TM2_CODE_SERVER_PORT_4266_TCP_ADDR": "10.0.0.7",
        "TM2_SERVICE_HOST": "10.0.0.8",  # a Service named tm2
        "TM2_PORT": "tcp://10.0.0.8:80",
    }
    for name, value in links.items():
        monkeypatch.setenv(name, value)
    assert load_settings().uses_embedded_store
    monkeypatch.setenv("TM2_MONGODB_URI", "mongodb://atlas.example.net/")  # still refused beside them
    with pytest.raises(SettingsError, match=r"the environment: TM2_MONGODB_URI \("):
        load_settings()


@pytest.mark.parametrize("value", ["0", "-1", "w1", "majorty"])
def test_a_write_concern_that_does_not_acknowledge_is_refused_up_front(monkeypatch, value):
    monkeypatch.setenv("TM2_MONGO_WRITE_CONCERN", value)
    with pytest.raises(SettingsError, match=f"TM2_MONGO_WRITE_CONCERN must be .* not '{value}'"):
        load_settings()


@pytest.mark.parametrize(("value", "kept"), [("majority", "majority"), (" 2 ", "2"), ("  ", "majority")])
def test_a_usable_write_concern_is_kept(monkeypatch, value, kept):
    monkeypatch.setenv("TM2_MONGO_WRITE_CONCERN", value)
    assert load_settings().mongo_write_concern == kept


def test_every_variable_of_the_example_file_is_known():
    example = Path(__file__).resolve().parent.parent / ".env.example"
    uncommented = "\n".join(line.lstrip("# ") for line in example.read_text().splitlines())
    Path("uncommented.env").write_text(uncommented)
    names = dotenv_values("uncommented.env")
    assert {"MONGODB_URI", "OPENMRS_BASE_URL", "TM2_MONGO_BATCH"} <= set(names)
    # Raises SettingsError on a name no setting reads.
    settings_module._refuse_unknown_names(names, settings_module._OWN_PREFIXES, ".env.example")


@pytest.mark.parametrize(
    ("uri", "db", "database"),
    [
        (None, None, "tm2"),
        ("mongodb+srv://u:p@c.example.net/?retryWrites=true", None, "tm2"),
        # An Atlas user with readWrite on its clinic's database only: that is where the store goes.
        ("mongodb+srv://u:p@c.example.net/clinicdb?retryWrites=true", None, "clinicdb"),
        ("mongodb+srv://u:p@c.example.net/clinicdb", "clinicdb", "clinicdb"),
        ("mongodb://h:27017/", "other", "other"),
    ],
)
def test_the_database_is_the_setting_else_the_one_the_uri_names(monkeypatch, uri, db, database):
    for name, value in (("MONGODB_URI", uri), ("TM2_MONGODB_DB", db)):
        if value is not None:
            monkeypatch.setenv(name, value)
    assert load_settings().mongodb_database == database


def test_a_database_setting_that_contradicts_the_uri_is_refused(monkeypatch):
    monkeypatch.setenv("MONGODB_URI", "mongodb+srv://u:secret@c.example.net/clinicdb")
    monkeypatch.setenv("TM2_MONGODB_DB", "tm2")
    with pytest.raises(
        SettingsError, match="TM2_MONGODB_DB='tm2' but MONGODB_URI names the database 'clinicdb'"
    ) as caught:
        load_settings()
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://u:p@h/clinic?appName=ops@site&w=1",  # an '@' in an option value
        "mongodb://alice:p@ss/w0rd@host/db",  # an unescaped '@' then '/' in the password
        "mongodb://alice:p@ssw0rd@host/db",  # an unescaped '@' in the password
    ],
)
def test_a_mongodb_uri_whose_parts_cannot_be_told_apart_is_refused(monkeypatch, uri):
    # Its database and options would be misread (the defaults would then override its own w).
    monkeypatch.setenv("MONGODB_URI", uri)
    with pytest.raises(SettingsError, match="percent-encoded") as caught:
        load_settings()
    assert "w0rd" not in str(caught.value) and "ops@site" not in str(caught.value)


@pytest.mark.parametrize(
    ("uri", "named"),
    [
        ("mongodb://u:secret@h/clinic?tls=maybe", "tls must be 'true' or 'false'"),
        ("mongodb://u:secret@h/?retryWrite=true", "Unknown option: retrywrite. Did you mean one of (retry"),
        ("mongodb://h/?readPreference=secretish", "… is not a valid read preference"),
        ("mongodb://h/?serverSelectionTimeoutMS=abc", "serverselectiontimeoutms must be an integer"),
    ],
)
def test_a_mongodb_uri_option_pymongo_would_drop_is_refused_by_name(monkeypatch, recwarn, uri, named):
    # pymongo only warns and drops it; the run would then fail as "cannot reach MongoDB".
    monkeypatch.setenv("MONGODB_URI", uri)
    with pytest.raises(SettingsError, match="MONGODB_URI has an option pymongo cannot use") as caught:
        load_settings()
    assert named in str(caught.value) and "secret" not in str(caught.value)
    assert not [warning for warning in recwarn if "pymongo" in str(warning.filename)]


def test_a_password_over_plain_http_to_another_host_is_refused_before_any_file_is_read(monkeypatch):
    monkeypatch.setenv("OPENMRS_BASE_URL", "http://emr.example.org/openmrs")
    monkeypatch.setenv("OPENMRS_USERNAME", "admin")
    monkeypatch.setenv("OPENMRS_PASSWORD", "Secret1")
    with pytest.raises(SettingsError, match=r"plain http to emr\.example\.org"):
        load_settings()
    monkeypatch.setenv("OPENMRS_ALLOW_INSECURE", "true")  # said out loud: accepted
    assert load_settings().openmrs_allow_insecure
    monkeypatch.setenv("OPENMRS_ALLOW_INSECURE", "false")
    monkeypatch.setenv("OPENMRS_BASE_URL", "http://127.0.0.1:8080/openmrs")  # never leaves the machine
    assert load_settings().openmrs_base_url == "http://127.0.0.1:8080/openmrs"


def test_credentials_in_the_openmrs_base_url_are_refused(monkeypatch):
    monkeypatch.setenv("OPENMRS_BASE_URL", "https://admin:Secret1@emr.example.org/openmrs")
    monkeypatch.setenv("OPENMRS_USERNAME", "admin")
    monkeypatch.setenv("OPENMRS_PASSWORD", "Secret1")
    with pytest.raises(SettingsError, match="must not contain credentials") as caught:
        load_settings()
    assert "Secret1" not in str(caught.value)


def test_the_ca_bundle_must_be_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENMRS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(SettingsError, match=r"OPENMRS_CA_BUNDLE=.*missing.pem' is not a file"):
        load_settings()
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("OPENMRS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    assert load_settings().openmrs_ca_bundle == tmp_path / "ca.pem"


def test_every_example_variable_left_empty_means_its_default(monkeypatch):
    # `.env.example` uncommented as it stands has `DAGSTER_HOME=`: an empty path must not be the
    # working directory (the sensor would take the repo's files for landed files), nor an empty
    # number an error.
    defaults = load_settings().model_dump()
    monkeypatch.setattr(os, "environ", os.environ.copy())  # load_dotenv exports what it reads
    example = Path(__file__).resolve().parent.parent / ".env.example"
    uncommented = "\n".join(line.lstrip("# ") for line in example.read_text().splitlines())
    Path("uncommented.env").write_text(uncommented)
    names = list(dotenv_values("uncommented.env"))
    assert {"DAGSTER_HOME", "TM2_LANDING_DIR", "TM2_HOME", "TM2_MONGO_BATCH", "TM2_DAY_FIRST"} <= set(names)
    Path(".env").write_text("".join(f"{name}=\n" for name in names))
    assert load_settings().model_dump() == defaults
    for name in names:  # set in the environment instead
        monkeypatch.setenv(name, "")
    Path(".env").unlink()
    assert load_settings().model_dump() == defaults


@pytest.mark.parametrize("variable", ["TM2_HOME", "DAGSTER_HOME", "TM2_LANDING_DIR"])
def test_a_folder_setting_that_names_a_file_is_refused_by_name(monkeypatch, tmp_path, variable):
    # From a review: TM2_HOME=/etc/passwd ended in a NotADirectoryError traceback.
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    monkeypatch.setenv(variable, str(afile / "below"))
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert (
        str(refused.value)
        == f"{variable}={str(afile / 'below')!r} is not a directory: {str(afile)!r} is a file"
    )
    monkeypatch.setenv(variable, str(tmp_path / "new" / "folder"))  # not there yet: made when needed
    load_settings()
