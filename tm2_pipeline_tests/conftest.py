"""Shared fixtures: a real SecantusDB server (separate process, over TCP) for integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from pymongo.database import Database

from tm2_pipeline.embedded.secantus import EmbeddedSecantus
from tm2_pipeline.io_manager import Tm2TableIOManager
from tm2_pipeline.pipeline_config import PipelineConfig
from tm2_pipeline.resources.mongo import MongoResource
from tm2_pipeline.resources.openmrs import OpenMRSResource


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
    """A fresh, uniquely named database on the real test server.

    Not dropped afterwards: SecantusDB takes seconds to drop one, and the whole server's data
    directory is a temporary one that goes with the session.
    """
    client: pymongo.MongoClient = pymongo.MongoClient(secantus_uri, serverSelectionTimeoutMS=5000)
    try:
        yield client[f"test_{uuid.uuid4().hex[:12]}"]
    finally:
        client.close()


@pytest.fixture
def pipeline_resources(tmp_path, secantus_uri: str) -> dict[str, Any]:
    """The pipeline's resources for one test: a temp TM2_HOME, a fresh database on the real test
    server, and the in-process OpenMRS sandbox (seeded, persisted under that TM2_HOME)."""
    home = tmp_path / "tm2home"
    (home / "landing").mkdir(parents=True)
    return {
        "mongo": MongoResource(
            uri=secantus_uri, tm2_home=str(home), database_name=f"test_{uuid.uuid4().hex[:12]}"
        ),
        "openmrs": OpenMRSResource(base_url=None, tm2_home=str(home)),
        "pipeline": PipelineConfig(tm2_home=str(home), landing_dir=str(home / "landing")),
        "tm2_table_io_manager": Tm2TableIOManager(tm2_home=str(home)),
    }
