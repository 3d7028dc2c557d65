"""Shared fixtures: a real SecantusDB server (separate process, over TCP) for integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pymongo
import pytest
from pymongo.database import Database

from tm2_pipeline.embedded.secantus import EmbeddedSecantus


@pytest.fixture(scope="session")
def secantus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a SecantusDB server started for this test session (one server per data directory)."""
    server = EmbeddedSecantus(tmp_path_factory.mktemp("secantus"))
    info = server.ensure_running()
    try:
        yield info.uri
    finally:
        server.stop()


@pytest.fixture
def mongo_db(secantus_uri: str) -> Iterator[Database]:
    """A fresh, uniquely named database on the real test server, dropped afterwards."""
    client: pymongo.MongoClient = pymongo.MongoClient(secantus_uri, serverSelectionTimeoutMS=5000)
    name = f"test_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()
