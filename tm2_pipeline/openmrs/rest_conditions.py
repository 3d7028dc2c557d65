"""OpenMRS's REST Condition resource (`/ws/rest/v1/condition`), inside the client's session: read one
(voided versions included), list a patient's, create one with its uuid, and post a new version. Its
FHIR2 twin is fhir_client.FhirConditions.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tm2_pipeline.openmrs.client import OpenMRSClient
from tm2_pipeline.openmrs.errors import TransientOpenMRSError
from tm2_pipeline.openmrs.responses import WriteResult, server_message
from tm2_pipeline.openmrs.transient import raise_if_transient, raise_if_webapp_missing


class RestConditions:
    def __init__(self, client: OpenMRSClient) -> None:
        self.client = client

    async def get(self, uuid: str) -> dict[str, Any] | None:
        return await self.client.get_json(
            f"/condition/{quote(uuid, safe='')}",
            what="condition lookup",
            params={"v": "full"},
            missing_ok=True,
        )

    async def of_patient(self, patient_uuid: str) -> list[dict[str, Any]]:
        """Every condition of the patient, whatever its clinical status (all pages, full representation).
        Without `includeInactive`, OpenMRS lists only active, recurrent and relapsed ones: a version a
        clinician marked inactive or resolved would not be found."""
        params = {"patientUuid": patient_uuid, "includeInactive": "true", "v": "full"}
        return [
            condition
            async for page, _ in self.client.pages("/condition", params, what="condition list")
            for condition in page
        ]

    async def create(self, payload: dict[str, Any]) -> WriteResult:
        return await self._write("/condition", payload, what="condition create")

    async def update(
        self, uuid: str, payload: dict[str, Any], *, not_after: float | None = None
    ) -> WriteResult:
        path = f"/condition/{quote(uuid, safe='')}"
        return await self._write(path, payload, what="condition update", not_after=not_after)

    async def _write(
        self, path: str, payload: dict[str, Any], *, what: str, not_after: float | None = None
    ) -> WriteResult:
        """POST once. Gateway errors raise `TransientOpenMRSError`; everything else is returned as is,
        because whether a 500 wrote anything must be checked by the caller."""
        response = await self.client.send("POST", path, what=what, json=payload, not_after=not_after)
        raise_if_transient(response, "POST", what)
        raise_if_webapp_missing(response, "POST", what)
        body = None
        if response.status_code in (200, 201):
            try:
                body = response.json()
            except ValueError:
                raise TransientOpenMRSError(
                    f"{what}: answer was not JSON", method="POST", status=response.status_code
                ) from None
        return WriteResult(response.status_code, body, server_message(response.text) if body is None else "")
