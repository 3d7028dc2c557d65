"""The MongoDB resource: one client per run process, the store's collections, and clear outage errors.

`uri=None` means the embedded store: the SecantusDB server of `tm2_home` is started (or reused) and
spoken to over TCP. Any other URI is used as given: `mongodb+srv://` implies TLS (Atlas); TLS is not
forced onto `mongodb://`. Credentials never appear in a message or a repr: errors name host:port only.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import ConfigurationError, PyMongoError

from tm2_pipeline.embedded.secantus import EmbeddedSecantus
from tm2_pipeline.store.errors import MongoRefused, MongoUnavailable, translate_mongo_errors
from tm2_pipeline.store.indexes import ensure_indexes
from tm2_pipeline.store.ingestions import IngestionLedger
from tm2_pipeline.store.records import RecordStore
from tm2_pipeline.store.rejects import RejectStore
from tm2_pipeline.store.submissions import SubmissionLog

__all__ = ["MongoRefused", "MongoResource", "MongoSettingsError", "MongoUnavailable", "describe_mongo_target"]

DEFAULT_PORT = 27017
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._%-]+)(:\d{1,5})?$")

# Index creation is idempotent but not free: once per process per (server, database).
_indexed: set[tuple[str, str]] = set()
_indexed_lock = threading.Lock()


class MongoSettingsError(ValueError):
    """The MongoDB settings are unusable; the message names the setting, never its secret value."""


def _hosts_of(uri: str) -> tuple[bool, list[str]] | None:
    """(is_srv, ["host:port", ...]) split like pymongo does, or None when it cannot be shown safely."""
    scheme, separator, rest = uri.partition("://")
    if not separator or scheme not in ("mongodb", "mongodb+srv"):
        return None
    is_srv = scheme == "mongodb+srv"
    host_part = rest.partition("?")[0].partition("/")[0]
    if "@" in rest and "@" not in host_part:
        return None  # an unescaped '/' or '?' in the credentials: any split would show part of them
    hosts = [host for host in host_part.rpartition("@")[2].split(",") if host]
    if not hosts or not all(_HOST.match(host) for host in hosts):
        return None
    if not is_srv:
        hosts = [host if _HOST.match(host).group(2) else f"{host}:{DEFAULT_PORT}" for host in hosts]
    return is_srv, hosts


def describe_mongo_target(uri: str | None, tm2_home: str | Path | None = None) -> str:
    """Where the store is, for messages: "HOST:PORT[,HOST:PORT]", the srv host, or the embedded store."""
    if uri is None:
        home = Path(tm2_home).expanduser().resolve() if tm2_home else Path("$TM2_HOME")
        return f"embedded store at {home / 'mongo'}"
    parsed = _hosts_of(uri)
    if parsed is None:
        return "a MongoDB URI that cannot be shown safely"
    return ",".join(parsed[1])


def redact_uri(uri: str | None) -> str | None:
    """The URI without secrets: credentials become `***`, option values (tokens, key passwords) are hidden."""
    if uri is None:
        return None
    parsed = _hosts_of(uri)
    if parsed is None:
        return "<hidden>"
    scheme, _, rest = uri.partition("://")
    address, question, _ = rest.partition("?")
    _credentials, at, hosts_and_db = address.rpartition("@")
    return f"{scheme}://{'***@' if at else ''}{hosts_and_db}{'?<options hidden>' if question else ''}"


def _write_concern(value: str) -> str | int:
    if value == "majority":
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    # w=0 is refused: unacknowledged writes would make the insert/update counts fiction.
    raise MongoSettingsError(f"TM2_MONGO_WRITE_CONCERN must be 'majority' or an integer >= 1, not {value!r}")


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
        return SubmissionLog(self.database())

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
        try:
            return MongoClient(
                uri,
                w=w,
                retryWrites=True,
                serverSelectionTimeoutMS=self.server_selection_timeout_ms,
                tz_aware=True,
                appname="tm2-pipeline",
            )
        except (PyMongoError, ValueError, TypeError) as error:
            # pymongo's text can quote the URI (credentials included): keep only the error's class name.
            kind = type(error).__name__
            if uri.startswith("mongodb+srv://") and type(error) is ConfigurationError:
                # An SRV record that does not resolve: the cluster cannot be reached, the URI is fine.
                raise MongoUnavailable(f"cannot reach MongoDB at {self._target} ({kind})") from None
            raise MongoSettingsError(f"MONGODB_URI is not a valid MongoDB URI ({kind})") from None
