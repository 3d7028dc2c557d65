"""Typed errors of the MongoDB store, and the one place where a lost connection becomes `MongoUnavailable`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, ConnectionFailure

DUPLICATE_KEY = 11000  # MongoDB's error code for a duplicate _id or unique-index value


class MongoUnavailable(RuntimeError):
    """MongoDB cannot be reached; the message names host:port only (never credentials or topology)."""


class RecordFrameError(ValueError):
    """The accepted-records frame does not have the agreed shape; the message says what is wrong."""


def client_target(client: MongoClient) -> str:
    """host:port of every seed the client knows (no credentials: pymongo never keeps them there)."""
    addresses = sorted(client.topology_description.server_descriptions())
    return ",".join(f"{host}:{port}" for host, port in addresses) or "an unknown address"


@contextlib.contextmanager
def translate_outage(target: str) -> Iterator[None]:
    """Turn pymongo's connection errors into `MongoUnavailable(target)`.

    pymongo's own text (e.g. a ServerSelectionTimeoutError's topology description) is dropped on purpose:
    only the error's class name is kept, and the cause is not chained, so nothing else reaches logs.
    """
    try:
        yield
    except ConnectionFailure as error:
        raise MongoUnavailable(f"cannot reach MongoDB at {target} ({type(error).__name__})") from None


def insert_new(collection: Collection, documents: list[dict]) -> list[dict]:
    """`insert_many(ordered=False)`; the documents whose `_id` was already taken come back (every
    other one is inserted). Any other write error, or a write-concern error, is raised."""
    if not documents:
        return []
    try:
        collection.insert_many(documents, ordered=False)
    except BulkWriteError as error:
        details = error.details
        if details.get("writeConcernErrors") or any(
            failure["code"] != DUPLICATE_KEY for failure in details["writeErrors"]
        ):
            raise
        return [documents[failure["index"]] for failure in details["writeErrors"]]
    return []
