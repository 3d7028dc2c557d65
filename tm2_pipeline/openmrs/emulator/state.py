"""The emulator's data and rules: users and sessions (with lockout), patients, concepts, conditions.

Conditions are plain dicts (persisted through `ConditionJournal`). Two update rules, as OpenMRS has:
- REST (`update_condition`, ConditionServiceImpl): a changed condition voids the old row and creates a
  new one whose `previousVersion` is the old; an unchanged one, or one already voided, is returned as it is.
- FHIR2 (`revise_condition`, BaseFhirService.update): the same row changes in place (same uuid), its
  `version` (FHIR's meta.versionId; absent = 1) counts up and `dateChanged` is set.
`fhir_concept_sources` is FHIR2's table fhir_concept_source: a coding system URL -> a concept source name.
"""

from __future__ import annotations

import secrets
import time
import uuid as uuid_module
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tm2_pipeline.openmrs.emulator.persistence import ConditionJournal
from tm2_pipeline.openmrs.emulator.seed import Seed

LOCKOUT_FAILURES = 7
LOCKOUT_SECONDS = 300.0
# The statuses OpenMRS's getActiveConditions lists (HibernateConditionDAO).
LISTED_AS_ACTIVE = frozenset({"ACTIVE", "RECURRENCE", "RELAPSE"})
CONDITION_CONTENT = (
    "coded",
    "nonCoded",
    "clinicalStatus",
    "verificationStatus",
    "onsetDate",
    "endDate",
    "additionalDetail",
)


class DuplicateUuid(Exception):
    """The database's unique index on condition.uuid refused the insert."""


class EmulatorState:
    def __init__(
        self,
        seed: Seed,
        *,
        users: dict[str, str] | None = None,
        journal: ConditionJournal | None = None,
        conditions: dict[str, dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users = dict(users or {"admin": "Admin123"})
        self.journal = journal
        self.clock = clock
        self.sessions: dict[str, str] = {}
        self.failed_logins: Counter[str] = Counter()
        self.locked_until: dict[str, float] = {}
        self.login_attempts: Counter[str] = Counter()  # every credential check, for tests and the CLI
        self.requests: Counter[str] = Counter()
        self.patients = {patient["uuid"]: patient for patient in seed.patients}
        self.patients_by_identifier: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for patient in seed.patients:
            for identifier in patient["identifiers"]:
                self.patients_by_identifier[identifier["identifier"]].append(patient)
        self.concept_sources = list(seed.concept_sources)
        self.concepts = {concept["uuid"]: concept for concept in seed.concepts}
        self.conditions: dict[str, dict[str, Any]] = dict(conditions or {})
        self.fhir_concept_sources = {row["url"]: row["conceptSource"] for row in seed.fhir_concept_sources}

    # --- users and sessions --------------------------------------------------------------------

    def authenticate(self, username: str, password: str) -> bool:
        """Check credentials like OpenMRS: 7 failures lock the account for 5 minutes."""
        self.login_attempts[username] += 1
        now = self.clock()
        if self.locked_until.get(username, 0.0) > now:
            return False
        if self.users.get(username) == password:
            self.failed_logins[username] = 0
            return True
        self.failed_logins[username] += 1
        if self.failed_logins[username] >= LOCKOUT_FAILURES:
            self.locked_until[username] = now + LOCKOUT_SECONDS
            self.failed_logins[username] = 0
        return False

    def new_session(self, username: str) -> str:
        token = secrets.token_hex(16).upper()
        self.sessions[token] = username
        return token

    def expire_sessions(self) -> None:
        """As after a server restart or an idle timeout: every JSESSIONID becomes unknown."""
        self.sessions.clear()

    # --- lookups -------------------------------------------------------------------------------

    def find_patients(self, identifier: str) -> list[dict[str, Any]]:
        return [p for p in self.patients_by_identifier.get(identifier, []) if not p.get("voided")]

    def find_source(self, reference: str) -> dict[str, Any] | None:
        wanted = reference.lower()
        for source in self.concept_sources:
            if wanted in (
                source["uuid"].lower(),
                source["name"].lower(),
                (source.get("hl7Code") or "").lower(),
            ):
                return source
        return None

    def concepts_mapped_to(self, source_reference: str, code: str) -> list[dict[str, Any]]:
        """Concepts with a mapping to `code` (case-insensitive) in the source (name, hl7Code or uuid)."""
        source = self.find_source(source_reference)
        if source is None:
            return []
        names = {source["name"].lower()}
        return [
            concept
            for concept in self.concepts.values()
            if not concept.get("retired")
            and any(
                m["source"].lower() in names and m["code"].lower() == code.lower()
                for m in concept["mappings"]
            )
        ]

    def concepts_listed_for(self, source_reference: str) -> list[dict[str, Any]]:
        """`GET /concept?source=` without a code: the concept of every mapping to the source (a concept
        mapped twice appears twice), retired ones left out (WS ConceptSearchHandler1_8)."""
        source = self.find_source(source_reference)
        if source is None:
            return []
        name = source["name"].lower()
        return [
            concept
            for concept in self.concepts.values()
            if not concept.get("retired")
            for mapping in concept["mappings"]
            if mapping["source"].lower() == name
        ]

    @property
    def sources_by_name(self) -> dict[str, dict[str, Any]]:
        return {source["name"].lower(): source for source in self.concept_sources}

    def resolve_concept(self, reference: str) -> list[dict[str, Any]]:
        """A concept reference as OpenMRS accepts it: a uuid or "SOURCE:CODE"."""
        if reference in self.concepts:
            return [self.concepts[reference]]
        source, separator, code = reference.partition(":")
        return self.concepts_mapped_to(source, code) if separator else []

    # --- conditions ----------------------------------------------------------------------------

    def _store(self, condition: dict[str, Any]) -> dict[str, Any]:
        self.conditions[condition["uuid"]] = condition
        if self.journal is not None:
            self.journal.append(condition)
        return condition

    def create_condition(self, fields: dict[str, Any]) -> dict[str, Any]:
        condition_uuid = fields.get("uuid") or str(uuid_module.uuid4())
        if condition_uuid in self.conditions:
            raise DuplicateUuid(condition_uuid)
        condition = {name: fields.get(name) for name in ("patient", *CONDITION_CONTENT)}
        condition.update(
            uuid=condition_uuid,
            previousVersion=fields.get("previousVersion"),
            voided=False,
            voidReason=None,
            dateCreated=datetime.now(UTC).isoformat(),
        )
        return self._store(condition)

    def update_condition(self, existing: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        if existing["voided"]:
            return existing
        proposed = {**existing, **changes}
        if all(proposed.get(name) == existing.get(name) for name in ("patient", *CONDITION_CONTENT)):
            return existing
        new_uuid = str(uuid_module.uuid4())
        self._store({**existing, "voided": True, "voidReason": f"Condition replaced by {new_uuid}"})
        return self.create_condition({**proposed, "uuid": new_uuid, "previousVersion": existing["uuid"]})

    def revise_condition(self, existing: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        """FHIR2's update: the condition changed in place, its version counted up; unchanged -> as it is."""
        proposed = {**existing, **changes}
        if all(proposed.get(name) == existing.get(name) for name in ("patient", *CONDITION_CONTENT)):
            return existing
        return self._store(
            {
                **proposed,
                "version": existing.get("version", 1) + 1,
                "dateChanged": datetime.now(UTC).isoformat(),
            }
        )

    def void_condition(self, existing: dict[str, Any], reason: str) -> None:
        if not existing["voided"]:
            self._store({**existing, "voided": True, "voidReason": reason})

    def conditions_of(self, patient_uuid: str, *, include_inactive: bool = False) -> list[dict[str, Any]]:
        """Non-voided conditions of a patient, newest first, as OpenMRS lists them: only the active,
        recurrent and relapsed ones unless `include_inactive` (ConditionResource2_2.doSearch:
        getActiveConditions, or getAllConditions with includeInactive=true)."""
        found = [
            c
            for c in self.conditions.values()
            if c["patient"] == patient_uuid
            and not c["voided"]
            and (include_inactive or c.get("clinicalStatus") in LISTED_AS_ACTIVE)
        ]
        return sorted(found, key=lambda condition: condition["dateCreated"], reverse=True)

    def live_conditions(self) -> list[dict[str, Any]]:
        """Every non-voided condition, oldest first (as FHIR2 lists them without a _sort)."""
        found = [c for c in self.conditions.values() if not c["voided"]]
        return sorted(found, key=lambda condition: condition["dateCreated"])

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close(self.conditions)
