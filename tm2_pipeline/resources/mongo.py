"""The MongoDB resource: one client per run process, the store's collections, and clear outage errors.

`uri=None` means the embedded store: the SecantusDB server of `tm2_home` is started (or reused) and
spoken to over TCP. Any other URI is used as given: `mongodb+srv://` implies TLS (Atlas); TLS is not
forced onto `mongodb://`. Credentials never appear in a message or a repr: errors name host:port only.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import ConfigurationError, PyMongoError

from tm2_pipeline.embedded.secantus import EmbeddedSecantus
from tm2_pipeline.mongo_uri import describe_mongo_target, redact_uri, uri_options
from tm2_pipeline.settings import SettingsError, parse_write_concern
from tm2_pipeline.store.errors import MongoRefused, MongoUnavailable, translate_mongo_errors
from tm2_pipeline.store.indexes import ensure_indexes
from tm2_pipeline.store.ingestions import IngestionLedger
from tm2_pipeline.store.records import RecordStore
from tm2_pipeline.store.rejects import RejectStore
from tm2_pipeline.store.submissions import SubmissionLog

__all__ = ["MongoRefused", "MongoResource", "MongoSettingsError", "MongoUnavailable"]

# Index creation is idempotent but not free: once per process per (server, database).
_indexed: set[tuple[str, str]] = set()
_indexed_lock = threading.Lock()


class MongoSettingsError(ValueError):
    """The MongoDB settings are unusable; the message names the setting, never its secret value."""


def _write_concern(value: str) -> str | int:
    try:
        return parse_write_concern(value)
    except SettingsError as error:  # a resource configured directly, not through settings
        raise MongoSettingsError(str(error)) from None


class MongoResource(dg.ConfigurableResource):
    """The store: `records()`, `rejects()`, `ingestions()`, `submissions()` on one cached client."""

    uri: str | None = Field(
        default=None, description="MongoDB URI (pass it as an EnvVar); None = the embedded SecantusDB store"
    )
    tm2_home: str = Field(description="$TM2_HOME: where the embedded store keeps its data")
    database_name: str = "tm2"
    write_concern: str = Field(default="majority", description="'majority' or an integer >= 1")
    batch_size: int = Field(default=5000, gt=0)
    server_selection_timeout_ms: int = Field(default=10000, gt=0)
    # A server that accepts connections and stops answering (a hung node, a half-open link) must not
    # hold a run for ever. No operation here is expected to take minutes: 5 only cuts a hang.
    socket_timeout_ms: int = Field(default=300_000, gt=0)

    _client: MongoClient | None = PrivateAttr(default=None)
    _client_uri: str | None = PrivateAttr(default=None)
    _target: str | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, (redact_uri(value) if name == "uri" else value)

    # Dagster lifecycle: connect once per run process, close at the end of the run.
    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._mongo_client()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    @property
    def target(self) -> str:
        """host:port of the server in use (the embedded store's once it runs)."""
        return self._target or describe_mongo_target(self.uri, self.tm2_home)

    def database(self) -> Database:
        """The pipeline's database; the first call per process also ensures the indexes."""
        client = self._mongo_client()
        db = client.get_database(self.database_name)
        marker = (self._client_uri, self.database_name)
        with _indexed_lock:
            if marker not in _indexed:
                with translate_mongo_errors(self.target):
                    ensure_indexes(db)
                _indexed.add(marker)
        return db

    def records(self) -> RecordStore:
        return RecordStore(self.database(), self.batch_size, target=self.target)

    def rejects(self) -> RejectStore:
        return RejectStore(self.database(), target=self.target)

    def ingestions(self) -> IngestionLedger:
        return IngestionLedger(self.database(), target=self.target)

    def submissions(self) -> SubmissionLog:
        """The OpenMRS submission log (`openmrs_submissions`)."""
        return SubmissionLog(self.database(), target=self.target)

    def ping(self) -> None:
        """Raise `MongoUnavailable` unless the server answers."""
        client = self._mongo_client()
        with translate_mongo_errors(self.target):
            client.admin.command("ping")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _mongo_client(self) -> MongoClient:
        with self._lock:
            uri = self.uri
            if uri is None:
                # The embedded server is started on demand, again after it stopped (on a new port):
                # a step retry in this process then reaches the restarted server.
                uri = EmbeddedSecantus(Path(self.tm2_home).expanduser()).ensure_running().uri
            if self._client is not None and uri != self._client_uri:
                self._client.close()
                self._client = None
            if self._client is None:
                self._target = describe_mongo_target(uri)
                self._client = self._new_client(uri)
                self._client_uri = uri
            return self._client

    def _new_client(self, uri: str) -> MongoClient:
        w = _write_concern(self.write_concern)
        written = uri_options(uri)
        # Options written in the URI win (an Atlas connection string's w, a longer selection timeout):
        # keyword arguments would silently override them.
        defaults = {
            "w": w,
            "retryWrites": True,
            "serverSelectionTimeoutMS": self.server_selection_timeout_ms,
            "appname": "tm2-pipeline",
        }
        if "timeoutms" not in written:  # the URI's own time limit for every operation wins
            defaults["socketTimeoutMS"] = self.socket_timeout_ms
        options = {name: value for name, value in defaults.items() if name.lower() not in written}
        try:
            client = MongoClient(uri, tz_aware=True, **options)
        except OSError as error:  # a TLS file named in the URI (tlsCAFile, tlsCertificateKeyFile)
            raise MongoSettingsError(
                f"a file named in MONGODB_URI cannot be read ({type(error).__name__})"
            ) from None
        except (PyMongoError, ValueError, TypeError) as error:
            # pymongo's text can quote the URI (credentials included): keep only the error's class name.
            kind = type(error).__name__
            if uri.startswith("mongodb+srv://") and type(error) is ConfigurationError:
                # An SRV record that does not resolve: the cluster cannot be reached, the URI is fine.
                raise MongoUnavailable(f"cannot reach MongoDB at {self._target} ({kind})") from None
            raise MongoSettingsError(f"MONGODB_URI is not a valid MongoDB URI ({kind})") from None
        if not client.write_concern.acknowledged:
            client.close()
            # w=0 (however written): unacknowledged writes would make the stored counts fiction.
            raise MongoSettingsError(
                "MONGODB_URI asks for unacknowledged writes (w=0): use w=majority or w=1"
            )
        return client
