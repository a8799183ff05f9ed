"""The versioned concepts file: observations, diagnostic criteria, anchor statements, thresholds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from schemas.events import OBSERVATIONS, Certainty, Observation

CONCEPTS_FILE = Path(__file__).with_name("concepts.v1.json")


#: The five CheXpert competition observations (mean AUC is reported over these).
COMPETITION_OBSERVATIONS: tuple[Observation, ...] = (
    Observation.ATELECTASIS,
    Observation.CARDIOMEGALY,
    Observation.CONSOLIDATION,
    Observation.EDEMA,
    Observation.PLEURAL_EFFUSION,
)
#: Order of the anchor states inside the model (anchor tensor axis 1).
ANCHOR_STATES: tuple[Certainty, ...] = (Certainty.PRESENT, Certainty.ABSENT, Certainty.UNCERTAIN)


@dataclass(frozen=True)
class Thresholds:
    """probability >= present -> present; probability < absent -> absent; between: uncertain."""

    present: float
    absent: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.absent <= self.present <= 1.0:
            raise ValueError(f"thresholds need 0 <= absent <= present <= 1, got {self}")


@dataclass(frozen=True)
class ConceptSpec:
    observation: Observation
    description: str
    criteria: tuple[str, ...]
    statements: dict[Certainty, tuple[str, ...]]
    thresholds: Thresholds


@dataclass(frozen=True)
class ConceptVocabulary:
    version: str
    concepts: tuple[ConceptSpec, ...]

    def thresholds(self) -> list[Thresholds]:
        return [c.thresholds for c in self.concepts]

    def anchor_texts(self, state: Certainty) -> list[list[str]]:
        """Per observation (CheXpert order), the statements of one state."""
        return [list(c.statements[state]) for c in self.concepts]


def parse_vocabulary(raw: dict) -> ConceptVocabulary:
    default = raw.get("default_thresholds", {"present": 0.6, "absent": 0.4})
    specs = []
    for entry in raw["observations"]:
        statements = {state: tuple(entry["statements"][state.value]) for state in ANCHOR_STATES}
        if any(not s for s in statements.values()):
            raise ValueError(f"{entry['name']}: every state needs at least one statement")
        t = entry.get("thresholds", default)
        specs.append(
            ConceptSpec(
                observation=Observation(entry["name"]),
                description=entry["description"],
                criteria=tuple(entry.get("criteria", ())),
                statements=statements,
                thresholds=Thresholds(present=float(t["present"]), absent=float(t["absent"])),
            )
        )
    if tuple(s.observation for s in specs) != OBSERVATIONS:
        raise ValueError("the concepts file must list the 14 observations in schemas.events.Observation order")
    return ConceptVocabulary(version=raw["version"], concepts=tuple(specs))


@lru_cache(maxsize=4)
def load_vocabulary(path: str | Path = CONCEPTS_FILE) -> ConceptVocabulary:
    return parse_vocabulary(json.loads(Path(path).read_text(encoding="utf-8")))
