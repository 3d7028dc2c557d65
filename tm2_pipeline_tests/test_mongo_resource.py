"""MongoResource: embedded start and reuse, index creation, Dagster lifecycle, outages and secrets."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import dagster as dg
import pymongo
import pytest

from tm2_pipeline.embedded.secantus import EmbeddedSecantus
from tm2_pipeline.mongo_uri import database_in_uri, describe_mongo_target, redact_uri, uri_options
from tm2_pipeline.resources.mongo import MongoResource, MongoSettingsError, MongoUnavailable
from tm2_pipeline.store.indexes import INDEXES
from tm2_pipeline.store.records import StoreCounts
from tm2_pipeline_tests.accepted_frames import accepted_frame

UNREACHABLE = "mongodb://user:secret@127.0.0.1:1/?authSource=admin"


# --- descriptions and redaction (no server) ---


@pytest.mark.parametrize(
    ("uri", "target"),
    [
        ("mongodb://user:secret@127.0.0.1:1/", "127.0.0.1:1"),
        ("mongodb://db1,db2:27018/tm2?replicaSet=rs0", "db1:27017,db2:27018"),
        (
            "mongodb+srv://user:secret@cluster0.abcde.mongodb.net/tm2?retryWrites=true",
            "cluster0.abcde.mongodb.net",
        ),
        ("mongodb://[::1]:27017/", "[::1]:27017"),
        ("mongodb://%2Ftmp%2Fmongodb-27017.sock/tm2", "/tmp/mongodb-27017.sock"),
        ("mongodb://u:p@ss@host:5/", "host:5"),
        # An unescaped '/' in the password: pymongo would split inside it, so nothing is shown.
        ("mongodb://admin:12/34@host/", "a MongoDB URI that cannot be shown safely"),
        ("postgres://user:secret@host/", "a MongoDB URI that cannot be shown safely"),
        # An unescaped '@' then '/' in the password: the part between them is no host name.
        ("mongodb://alice:p@ss/w0rd@host/", "a MongoDB URI that cannot be shown safely"),
        ("mongodb://alice:p?ss@host/", "a MongoDB URI that cannot be shown safely"),
    ],
)
def test_targets_name_hosts_never_credentials(uri, target):
    assert describe_mongo_target(uri) == target


@pytest.mark.parametrize(
    ("uri", "database", "options"),
    [
        ("mongodb+srv://u:p@c.example.net/clinic%2Ddb?retryWrites=true&W=1", "clinic-db",
         {"retrywrites": "true", "w": "1"}),
        ("mongodb://h1,h2:27018/?replicaSet=rs0;appName=x", None, {"replicaset": "rs0", "appname": "x"}),
        ("mongodb://h", None, {}),
        ("mongodb://h/clinic.records?w=1", "clinic", {"w": "1"}),  # the old /db.collection form
        ("mongodb://alice:p@ss/w0rd@host/db?w=0", None, {}),  # not safely split: nothing read
    ],
)  # fmt: skip
def test_database_and_options_are_read_from_the_uri(uri, database, options):
    assert (database_in_uri(uri), uri_options(uri)) == (database, options)


def test_options_written_in_the_uri_win_over_the_defaults(tmp_path):
    uri = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=60000&w=1&retryWrites=false&appName=clinic"
    client = MongoResource(uri=uri, tm2_home=str(tmp_path))._mongo_client()
    try:
        assert (client.options.server_selection_timeout, client.write_concern.document) == (60, {"w": 1})
        assert (client.options.retry_writes, client.options.pool_options.metadata["application"]) == (
            False,
            {"name": "clinic"},
        )
    finally:
        client.close()
    defaults = MongoResource(uri="mongodb://127.0.0.1:1/", tm2_home=str(tmp_path))._mongo_client()
    try:
        assert (defaults.options.server_selection_timeout, defaults.write_concern.document) == (
            10,
            {"w": "majority"},
        )
        assert defaults.options.retry_writes is True
        assert defaults.options.pool_options.socket_timeout == 300  # a hung server cannot hold a run
    finally:
        defaults.close()
    for written, socket_timeout, timeout in (("socketTimeoutMS=5000", 5, None), ("timeoutMS=2000", None, 2)):
        client = MongoResource(
            uri=f"mongodb://127.0.0.1:1/?{written}", tm2_home=str(tmp_path)
        )._mongo_client()
        try:
            assert (client.options.pool_options.socket_timeout, client.options.timeout) == (
                socket_timeout,
                timeout,
            )
        finally:
            client.close()
    for w in ("0", "00", "+0"):  # pymongo reads each as 0
        with pytest.raises(MongoSettingsError, match=r"unacknowledged writes \(w=0\)"):
            MongoResource(uri=f"mongodb://127.0.0.1:1/?w={w}", tm2_home=str(tmp_path)).ping()
    missing_file = "mongodb://127.0.0.1:1/?tls=true&tlsCAFile=/nonexistent/ca.pem"
    with pytest.raises(MongoSettingsError, match=r"a file named in MONGODB_URI cannot be read"):
        MongoResource(uri=missing_file, tm2_home=str(tmp_path)).ping()


def test_embedded_target_names_the_data_directory(tmp_path):
    assert describe_mongo_target(None, tmp_path) == f"embedded store at {tmp_path / 'mongo'}"


def test_repr_hides_credentials_and_options():
    resource = MongoResource(uri="mongodb+srv://user:secret@c.example.net/tm2?tlsCertificateKeyFilePassword=pw",
                             tm2_home="/tmp/tm2")  # fmt: skip
    for text in (repr(resource), str(resource)):
        assert "secret" not in text and "pw" not in text
        assert "mongodb+srv://***@c.example.net/tm2?<options hidden>" in text
    assert redact_uri("mongodb://h:1/") == "mongodb://h:1/"


def test_write_concern_must_acknowledge(tmp_path):
    for value in ("0", "w1", "-1"):
        with pytest.raises(MongoSettingsError, match="TM2_MONGO_WRITE_CONCERN"):
            MongoResource(uri=UNREACHABLE, tm2_home=str(tmp_path), write_concern=value).database()


def test_a_malformed_uri_is_a_settings_error_without_its_text(tmp_path):
    resource = MongoResource(uri="mongodb://user:se/cret@host/", tm2_home=str(tmp_path))
    with pytest.raises(MongoSettingsError) as raised:
        resource.ping()
    assert str(raised.value) == "MONGODB_URI is not a valid MongoDB URI (InvalidURI)"
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


# --- unreachable server ---


def test_an_unreachable_server_raises_mongo_unavailable_naming_host_and_port(tmp_path):
    resource = MongoResource(uri=UNREACHABLE, tm2_home=str(tmp_path), server_selection_timeout_ms=500)
    for action in (resource.ping, resource.database, resource.records):
        with pytest.raises(MongoUnavailable) as raised:
            action()
        message = str(raised.value)
        assert message.startswith("cannot reach MongoDB at 127.0.0.1:1")
        assert "secret" not in message and "user" not in message and "Topology" not in message
        # pymongo's own error (its topology description) is not chained into tracebacks either.
        assert raised.value.__cause__ is None and raised.value.__suppress_context__
    resource.close()


# --- a real server ---


@pytest.mark.integration
def test_embedded_mode_starts_one_server_and_reuses_it(tmp_path):
    server = EmbeddedSecantus(tmp_path)
    try:
        first = MongoResource(tm2_home=str(tmp_path))
        first.ping()
        running = server.status()
        assert running is not None
        assert first.target == f"127.0.0.1:{running.port}"

        second = MongoResource(tm2_home=str(tmp_path), database_name="tm2")
        second.ping()
        assert server.status().pid == running.pid

        db = second.database()
        for collection, indexes in INDEXES.items():
            names = set(db[collection].index_information())
            assert {index.document["name"] for index in indexes} <= names
        assert second.submissions().state_counts() == {}  # the OpenMRS log sits on the same database
        first.close()
        second.close()
    finally:
        server.stop()


@pytest.mark.integration
def test_integer_write_concern_and_timezone_aware_reads(secantus_uri, tmp_path):
    name = f"test_{uuid.uuid4().hex[:12]}"
    resource = MongoResource(uri=secantus_uri, tm2_home=str(tmp_path), database_name=name, write_concern="1")
    try:
        at = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
        resource.ingestions().record_outcome(file="a.csv", sha256="a" * 64, status="succeeded", at=at)
        assert resource.database().client.write_concern.document == {"w": 1}
        assert resource.ingestions().latest_for_file("a.csv")["at"] == at
    finally:
        resource.database().client.drop_database(name)
        resource.close()


class LifecycleRecordingMongoResource(MongoResource):
    """Notes whether the run's copy of the resource held a client at teardown and released it."""

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        LIFECYCLE.append(("connected", self._client is not None))
        super().teardown_after_execution(context)
        LIFECYCLE.append(("closed", self._client is None))


LIFECYCLE: list[tuple[str, bool]] = []


@pytest.mark.integration
def test_the_resource_works_inside_a_dagster_run(secantus_uri, tmp_path):
    name = f"test_{uuid.uuid4().hex[:12]}"
    LIFECYCLE.clear()
    frame = accepted_frame(7)

    @dg.asset
    def stored(mongo: MongoResource) -> dict:
        counts = mongo.records().store(frame, file_name="a.csv", sha256="a" * 64, now=datetime.now(UTC))
        return {"inserted": counts.inserted, "updated": counts.updated, "unchanged": counts.unchanged}

    resource = LifecycleRecordingMongoResource(
        uri=secantus_uri, tm2_home=str(tmp_path), database_name=name, batch_size=3
    )
    result = dg.materialize([stored], resources={"mongo": resource})
    assert result.success
    assert LIFECYCLE == [("connected", True), ("closed", True)]
    assert StoreCounts(**result.output_for_node("stored")) == StoreCounts(inserted=7)
    with pymongo.MongoClient(secantus_uri) as client:
        assert client[name]["tm2_records"].count_documents({}) == 7
        client.drop_database(name)
