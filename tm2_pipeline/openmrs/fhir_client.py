"""OpenMRS FHIR2's Condition resource (`<webapp>/ws/fhir2/R4/Condition`), inside the REST client's
session: one login serves both APIs (the JSESSIONID cookie is the webapp's).

Reads: a search by patient and onset date (every page), and a read by id. Writes: `POST` (FHIR2
assigns the id) and `PUT` (in place: the id stays). Failures mean what they mean for the REST
calls (`transient.py`); FHIR's own errors are OperationOutcomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from tm2_pipeline.openmrs.client import OpenMRSClient
from tm2_pipeline.openmrs.client_config import FHIR_PATH
from tm2_pipeline.openmrs.errors import OpenMRSError, TransientOpenMRSError
from tm2_pipeline.openmrs.responses import WriteResult, server_message
from tm2_pipeline.openmrs.transient import raise_if_transient, raise_if_webapp_missing

FHIR_JSON = "application/fhir+json"
# A search listing more pages than this for one patient and day is not a clinic's problem list.
MAX_SEARCH_PAGES = 50
# Problem-list conditions only: without it FHIR2 (2.8+) searches encounter diagnoses too, which needs
# a privilege ("Get Diagnoses") the pipeline's user has no other use for, and answers 500 without it.
PROBLEM_LIST = "http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item"


@dataclass(frozen=True)
class ConditionRead:
    """A read by id: the resource (200), absent (404), or voided in OpenMRS (410)."""

    resource: dict[str, Any] | None
    gone: bool = False


class FhirConditions:
    def __init__(self, client: OpenMRSClient) -> None:
        self.client = client
        self.base = client.config.fhir_base

    async def search(self, patient_uuid: str, onset_date: str) -> list[dict[str, Any]]:
        """The patient's problem-list conditions with onset on that day, or a day either side (every
        page): FHIR2 compares onsets in its JVM's time zone, which may have changed since one was
        written, or differ from the one another client wrote it in."""
        day = date.fromisoformat(onset_date)
        url: str | None = f"{self.base}/Condition"
        params: list[tuple[str, str]] | None = [
            ("patient", patient_uuid),
            ("category", PROBLEM_LIST),
            ("onset-date", f"ge{day - timedelta(days=1)}"),
            ("onset-date", f"le{day + timedelta(days=1)}"),
            ("_count", str(self.client.config.page_limit)),
        ]
        found: list[dict[str, Any]] = []
        for page in range(MAX_SEARCH_PAGES):
            if url is None:
                return found
            bundle = await self._get(url, what="condition search", params=params, later_page=page > 0)
            for entry in bundle.get("entry") or []:
                resource = entry.get("resource") or {}
                if resource.get("resourceType") == "Condition":
                    found.append(resource)
            url, params = self._next_page(bundle), None
        if url is not None:
            raise OpenMRSError(
                f"condition search: more than {MAX_SEARCH_PAGES} pages for one patient and day"
            )
        return found

    def _next_page(self, bundle: dict[str, Any]) -> str | None:
        """The bundle's `next` link, sent to the configured server: OpenMRS behind a gateway builds its
        links from the address (and path) it was reached at inside, which this machine may not reach.
        What follows FHIR2's base in the link's path is kept, and its query."""
        for link in bundle.get("link") or []:
            if link.get("relation") == "next" and link.get("url"):
                theirs = urlsplit(link["url"])
                _, separator, rest = theirs.path.partition(FHIR_PATH)
                ours = urlsplit(self.base + rest if separator else self.base)
                return urlunsplit((ours.scheme, ours.netloc, ours.path, theirs.query, ""))
        return None

    async def read(self, condition_id: str) -> ConditionRead:
        response = await self.client.send(
            "GET", f"{self.base}/Condition/{quote(condition_id, safe='')}", what="condition read"
        )
        if response.status_code == 410:
            return ConditionRead(None, gone=True)
        if response.status_code == 404:
            raise_if_webapp_missing(response, "GET", "condition read")
            return ConditionRead(None)
        return ConditionRead(self.client.read_body(response, "condition read"))

    async def create(self, resource: dict[str, Any], *, not_after: float | None = None) -> WriteResult:
        url = f"{self.base}/Condition"
        return await self._write("POST", url, resource, what="condition create", not_after=not_after)

    async def update(
        self, condition_id: str, resource: dict[str, Any], *, not_after: float | None = None
    ) -> WriteResult:
        url = f"{self.base}/Condition/{quote(condition_id, safe='')}"
        return await self._write("PUT", url, resource, what="condition update", not_after=not_after)

    async def _get(
        self, url: str, *, what: str, params: list[tuple[str, str]] | None, later_page: bool
    ) -> dict[str, Any]:
        response = await self.client.send("GET", url, what=what, params=params)
        raise_if_webapp_missing(response, "GET", what)
        if later_page and response.status_code in (404, 410):
            # HAPI keeps a bounded number of searches for paging: this one was dropped. The retry
            # searches again from the first page.
            raise TransientOpenMRSError(f"{what}: a later page answered {response.status_code}", method="GET")
        return self.client.read_body(response, what)

    async def _write(
        self, method: str, url: str, resource: dict[str, Any], *, what: str, not_after: float | None
    ) -> WriteResult:
        """Send once. Gateway errors raise `TransientOpenMRSError`; everything else is returned as is,
        because whether a 500 wrote anything must be checked by the caller."""
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, "Prefer": "return=representation"}
        response = await self.client.send(
            method, url, what=what, json=resource, headers=headers, not_after=not_after
        )
        raise_if_transient(response, method, what)
        raise_if_webapp_missing(response, method, what)
        if response.status_code >= 500 and not _is_operation_outcome(response):
            # Not FHIR2's own error (an OperationOutcome) but a gateway's page: OpenMRS may still be
            # processing the request.
            raise TransientOpenMRSError(
                f"{what}: answered {response.status_code} with a page, not FHIR2's error",
                method=method,
                status=response.status_code,
                in_doubt=True,
            )
        if response.status_code not in (200, 201):
            return WriteResult(response.status_code, None, server_message(response.text))
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not body.get("id"):
            # Without a body, the id is in Location: .../Condition/<id>/_history/<version>.
            parts = urlsplit(response.headers.get("Location", "")).path.split("/")
            if "Condition" in parts[:-1]:
                body = {**body, "id": parts[parts.index("Condition") + 1]}
        if not body.get("id"):
            raise TransientOpenMRSError(
                f"{what}: answered {response.status_code} without the condition's id",
                method=method,
                status=response.status_code,
                in_doubt=True,
            )
        return WriteResult(response.status_code, body, "")


def _is_operation_outcome(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"
