"""The embedded SecantusDB process manager: started once, reused, never confused by a stale pid."""

import json

import pymongo
import pytest

from tm2_pipeline.embedded.secantus import EmbeddedSecantus

pytestmark = pytest.mark.integration


def test_start_reuse_and_stop(tmp_path):
    server = EmbeddedSecantus(tmp_path)
    info = server.ensure_running()
    try:
        assert EmbeddedSecantus(tmp_path).ensure_running() == info  # a second process reuses it
        client = pymongo.MongoClient(info.uri, serverSelectionTimeoutMS=3000)
        assert client.admin.command("ping")["ok"] == 1.0
        client.close()
        assert (tmp_path / "mongo.log").exists()
    finally:
        assert server.stop() is True
    assert server.status() is None
    assert server.stop() is False


def test_stale_state_pointing_at_a_foreign_pid_is_not_reused(tmp_path):
    import os

    (tmp_path / "mongo.json").write_text(json.dumps({"pid": os.getpid(), "port": 1}))
    server = EmbeddedSecantus(tmp_path)
    assert server.status() is None  # our own pytest pid is not a SecantusDB server
    info = server.ensure_running()
    try:
        assert info.pid != os.getpid()
    finally:
        server.stop()
