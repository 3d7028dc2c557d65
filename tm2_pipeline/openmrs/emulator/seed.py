"""Loading the sandbox's starting data (patients, concept sources, concepts) from `data/openmrs_seed/`.

Optional there: `fhir_concept_sources.json`, FHIR2's fhir_concept_source rows (`[{"url": <coding
system>, "conceptSource": <source name>}]`, what Initializer's fhirconceptsources CSV loads). Absent,
no coding system names a concept source, as on a server that has none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tm2_pipeline.codes import DATA_DIR

SEED_DIR = DATA_DIR / "openmrs_seed"


@dataclass(frozen=True)
class Seed:
    patients: list[dict[str, Any]]
    concept_sources: list[dict[str, Any]]
    concepts: list[dict[str, Any]]
    fhir_concept_sources: list[dict[str, Any]] = field(default_factory=list)


def _read(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def load_seed(directory: Path = SEED_DIR) -> Seed:
    fhir_sources = directory / "fhir_concept_sources.json"
    return Seed(
        patients=_read(directory / "patients.json"),
        concept_sources=_read(directory / "concept_sources.json"),
        concepts=_read(directory / "concepts.json"),
        fhir_concept_sources=_read(fhir_sources) if fhir_sources.exists() else [],
    )
