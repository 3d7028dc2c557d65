"""Which version of a condition is the live one: OpenMRS replaces a condition on every edit
(the old version voided, the new one naming it as `previousVersion`) and lists live ones only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tm2_pipeline.openmrs.payloads import previous_version_of
from tm2_pipeline.openmrs.rest_conditions import RestConditions

# Condition lookups one record may spend reading back version histories (a rare path: edits made
# in OpenMRS or by another run since this log last looked).
HISTORY_LOOKUPS = 20


async def latest_version(conditions: RestConditions, patient_uuid: str, uuid: str) -> dict[str, Any] | None:
    """The newest listed version of `uuid`, following previousVersion links (None: not listed).

    OpenMRS lists live conditions only. When the version after `uuid` was itself replaced (two
    edits since this log last looked), no listed condition names `uuid` as its previous
    version: then each listed one's history is read back, a bounded number of lookups.
    """
    listed = await conditions.of_patient(patient_uuid)
    by_uuid = {condition["uuid"]: condition for condition in listed}
    successor = {previous_version_of(c): c for c in listed if previous_version_of(c)}
    current = by_uuid.get(uuid)
    start, seen = uuid, {uuid}
    while uuid in successor and successor[uuid]["uuid"] not in seen:
        current = successor[uuid]
        uuid = current["uuid"]
        seen.add(uuid)
    if current is None or current.get("voided"):
        return await _live_descendant(conditions, listed, start) or current
    return current


async def _live_descendant(
    conditions: RestConditions, listed: Sequence[dict[str, Any]], uuid: str
) -> dict[str, Any] | None:
    """The listed, live condition whose chain of previous versions reaches `uuid`, if any."""
    lookups = HISTORY_LOOKUPS
    for condition in listed:
        if condition.get("voided"):
            continue
        earlier, visited = previous_version_of(condition), set()
        while earlier and earlier not in visited and lookups > 0:
            if earlier == uuid:
                return condition
            visited.add(earlier)
            lookups -= 1
            version = await conditions.get(earlier)
            earlier = previous_version_of(version) if version else None
    return None
