"""Typed errors of the MongoDB store, and the one place where pymongo's errors become them.

pymongo's own messages are never passed on: a lost connection's text can describe the topology,
and a refused write's text quotes the documents (patient ids included) and the duplicate key values.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, ConnectionFailure, OperationFailure

DUPLICATE_KEY = 11000  # MongoDB's error code for a duplicate _id or unique-index value


class MongoUnavailable(RuntimeError):
    """MongoDB cannot be reached; the message names host:port only (never credentials or topology)."""


class MongoRefused(RuntimeError):
    """MongoDB answered but refused an operation; the message keeps error codes and counts only."""


class RecordFrameError(ValueError):
    """The accepted-records frame does not have the agreed shape; the message says what is wrong."""


def client_target(client: MongoClient) -> str:
    """host:port of every seed the client knows (no credentials: pymongo never keeps them there)."""
    try:
        addresses = sorted(client.topology_description.server_descriptions())
    except (AttributeError, TypeError):  # not a pymongo client (mongomock, in unit tests)
        return "an unknown address"
    return ",".join(f"{host}:{port}" for host, port in addresses) or "an unknown address"


@contextlib.contextmanager
def translate_mongo_errors(target: str) -> Iterator[None]:
    """Turn pymongo's connection errors into `MongoUnavailable(target)` and the server's refusals
    (write errors, write-concern errors, failed commands) into `MongoRefused`.

    Only the error's class name, codes and counts are kept, and the cause is not chained (Dagster
    stores a failed step's whole exception chain), so none of pymongo's text reaches logs.
    """
    try:
        yield
    except ConnectionFailure as error:
        raise MongoUnavailable(f"cannot reach MongoDB at {target} ({type(error).__name__})") from None
    except OperationFailure as error:
        raise MongoRefused(f"MongoDB at {target} refused the operation: {describe_refusal(error)}") from None


def describe_refusal(error: OperationFailure) -> str:
    """What a refusal was, without its messages: e.g. `BulkWriteError: 3 inserted; write errors:
    code 11000 x2; write concern errors: code 64 (WriteConcernFailed)`."""
    if isinstance(error, BulkWriteError):
        details = error.details or {}
        parts = [f"{details.get('nInserted', 0)} inserted, {details.get('nModified', 0)} modified"]
        write_codes = Counter(failure.get("code") for failure in details.get("writeErrors") or [])
        if write_codes:
            parts.append(
                "write errors: " + ", ".join(f"code {code} x{count}" for code, count in write_codes.items())
            )
        concern = [_code_text(failure) for failure in details.get("writeConcernErrors") or []]
        if concern:
            parts.append("write concern errors: " + ", ".join(concern))
        return f"{type(error).__name__}: " + "; ".join(parts)
    return f"{type(error).__name__}: {_code_text({'code': error.code, **(error.details or {})})}"


def _code_text(failure: dict) -> str:
    code, name = failure.get("code"), failure.get("codeName")
    return f"code {code} ({name})" if isinstance(name, str) and name.isidentifier() else f"code {code}"


def insert_new(collection: Collection, documents: list[dict]) -> list[dict]:
    """`insert_many(ordered=False)`; the documents whose `_id` was already taken come back (every
    other one is inserted). Any other write error, or a write-concern error, is raised (callers
    translate it with `translate_mongo_errors`)."""
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
