"""Condition searches as FHIR2 runs them, and HAPI's memory of them for paging.

Read in openmrs-module-fhir2: providers/r4/ConditionFhirResourceProvider.searchConditions,
api/dao/impl/FhirConditionDaoImpl, api/search/SearchQueryBundleProvider, and omod's
web/servlet/FhirRestServlet (FifoMemoryPagingProvider(100), page size 10 by default, 100 at most).
Parameters: `patient` (else `subject`): a uuid, Patient/<uuid> or a URL ending so; `onset-date` with a
prefix (eq ne lt le gt ge sa eb) at year, month or day precision; `code`: a concept uuid, or
system|code through fhir_concept_source (an unknown system matches nothing); `clinical-status`
("active", anything else is inactive). A comma means or, a repeated parameter and; any other
parameter is ignored. Voided conditions are never found. A later page runs the search again at its
offset (SearchQueryBundleProvider), with the total of the first run.
"""

from __future__ import annotations

import uuid as uuid_module
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from typing import Any

from starlette.datastructures import QueryParams

from tm2_pipeline.openmrs.emulator.fhir_resources import Refused, fhir_period
from tm2_pipeline.openmrs.emulator.state import EmulatorState

DEFAULT_COUNT = 10
MAX_COUNT = 100
KEPT_SEARCHES = 100
PREFIXES = ("eq", "ne", "lt", "le", "gt", "ge", "sa", "eb", "ap")


@dataclass(frozen=True)
class ConditionQuery:
    """A search, each field a list of alternatives (or) that must all hold (and)."""

    patients: tuple[frozenset[str], ...] = ()
    onsets: tuple[tuple[str, date, date], ...] = ()
    codes: tuple[frozenset[tuple[str, str]], ...] = ()
    clinical: tuple[frozenset[str], ...] = ()

    def run(self, state: EmulatorState) -> list[dict[str, Any]]:
        return [c for c in state.live_conditions() if self._matches(c, state)]

    def _matches(self, condition: dict[str, Any], state: EmulatorState) -> bool:
        onset = date.fromisoformat(condition["onsetDate"][:10]) if condition.get("onsetDate") else None
        return (
            all(condition["patient"] in wanted for wanted in self.patients)
            and all(onset is not None and _on(onset, *test) for test in self.onsets)
            and all(any(_coded_as(condition, state, *token) for token in tokens) for tokens in self.codes)
            and all((condition.get("clinicalStatus") or "") in wanted for wanted in self.clinical)
        )


def _on(day: date, prefix: str, start: date, end: date) -> bool:
    """FhirSearchQueryHelper.handleDate, at day precision."""
    if prefix == "ne":
        return not start <= day < end
    if prefix in ("lt", "le"):
        return day < end
    if prefix in ("gt", "ge"):
        return day >= start
    if prefix == "sa":
        return day >= end
    if prefix == "eb":
        return day < start
    return start <= day < end


def _coded_as(condition: dict[str, Any], state: EmulatorState, system: str, code: str) -> bool:
    coded = condition.get("coded")
    if not coded:
        return False
    if not system:
        return coded == code
    source = state.fhir_concept_sources.get(system)
    concept = state.concepts.get(coded)
    if source is None or concept is None:
        return False
    return any(
        m["source"].lower() == source.lower() and m["code"].lower() == code.lower()
        for m in concept["mappings"]
    )


def _token(text: str) -> tuple[str, str]:
    """A token parameter's (system, code); "code" and "|code" have no system."""
    system, _, code = text.rpartition("|")
    return system, code


def _patient_id(reference: str) -> str:
    return reference.split("/_history/")[0].rstrip("/").rsplit("/", 1)[-1]


def _onset(value: str) -> tuple[str, date, date]:
    prefix = value[:2] if value[:2] in PREFIXES else "eq"
    try:
        start, end = fhir_period(value[2:] if value[:2] in PREFIXES else value)
    except ValueError as problem:
        raise Refused(400, f"Invalid onset-date: {problem}") from None
    return prefix, start, end


def parse_query(params: QueryParams) -> ConditionQuery:
    references = params.getlist("patient") or params.getlist("subject")

    def alternatives(name: str) -> list[list[str]]:
        return [[part for part in value.split(",") if part] for value in params.getlist(name)]

    return ConditionQuery(
        patients=tuple(frozenset(_patient_id(r) for r in value.split(",") if r) for value in references),
        onsets=tuple(_onset(value) for value in params.getlist("onset-date")),
        codes=tuple(frozenset(_token(t) for t in tokens) for tokens in alternatives("code")),
        clinical=tuple(
            frozenset("ACTIVE" if _token(t)[1].lower() == "active" else "INACTIVE" for t in tokens)
            for tokens in alternatives("clinical-status")
        ),
    )


def page_size(value: str | None) -> int:
    """HAPI's _count: 10 when absent or unreadable, at most 100."""
    try:
        return min(max(int(value), 0), MAX_COUNT) if value is not None else DEFAULT_COUNT
    except ValueError:
        return DEFAULT_COUNT


class SearchStore:
    """The searches a next link can name, the oldest forgotten past 100 (FifoMemoryPagingProvider)."""

    def __init__(self, capacity: int = KEPT_SEARCHES) -> None:
        self.capacity = capacity
        self._searches: OrderedDict[str, tuple[ConditionQuery, int]] = OrderedDict()

    def keep(self, query: ConditionQuery, total: int) -> str:
        search_id = str(uuid_module.uuid4())
        self._searches[search_id] = (query, total)
        while len(self._searches) > self.capacity:
            self._searches.popitem(last=False)
        return search_id

    def get(self, search_id: str) -> tuple[ConditionQuery, int] | None:
        return self._searches.get(search_id)
