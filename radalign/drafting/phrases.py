"""The versioned phrase table of the structured drafter (`phrases.v1.json` beside this module).

One entry per observation and state (present / likely / possible / absent), the report section it
belongs to and its rank in the IMPRESSION; groups of absent observations that one normal sentence
covers ("The lungs are clear."); the impression, OOD and footer wording. The version travels with
every report (`ReportDrafted.phrase_table_version`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Literal

from radalign.sites.macros import NormalMacro
from schemas.events import Observation

SectionName = Literal["support_devices", "heart_mediastinum", "lungs", "pleura", "bones_soft_tissues"]
Band = Literal["present", "likely", "possible", "absent"]
PHRASE_TABLES = ("phrases.v1.json",)
DEFAULT_PHRASE_TABLE = "phrases.v1.json"


@dataclass(frozen=True)
class ObservationPhrases:
    observation: Observation
    section: SectionName
    priority: int  # 1 = first in the IMPRESSION
    present: str
    likely: str
    possible: str
    absent: str | None  # None: the section's normal statement covers it; nothing of its own
    impression: str

    def sentence(self, band: Band) -> str | None:
        return {"present": self.present, "likely": self.likely, "possible": self.possible, "absent": self.absent}[band]


@dataclass(frozen=True)
class AbsentGroup:
    observations: frozenset[Observation]
    sentence: str


@dataclass(frozen=True)
class PhraseTable:
    version: str
    present_threshold: float
    absent_threshold: float
    sections: tuple[tuple[SectionName, str], ...]  # (name, title) in reading order
    observations: dict[Observation, ObservationPhrases]
    absent_groups: tuple[AbsentGroup, ...]  # tried in order: the first that fits wins
    impression: dict[str, str]
    ood_reasons: dict[str, str]
    footer: str
    #: The default normal report (a site's own macro replaces it: `radalign.sites.macros`).
    normal_macro: NormalMacro

    def in_section(self, section: SectionName) -> list[ObservationPhrases]:
        return [p for o, p in self.observations.items() if p.section == section]


def parse_phrase_table(raw: dict) -> PhraseTable:
    """Validate and build a table; raises ValueError naming what is wrong."""
    try:
        sections = tuple((s["name"], s["title"]) for s in raw["sections"])
        names = {name for name, _ in sections}
        observations: dict[Observation, ObservationPhrases] = {}
        for name, entry in raw["observations"].items():
            observation = Observation(name)
            if entry["section"] not in names:
                raise ValueError(f"{name}: unknown section {entry['section']!r}")
            observations[observation] = ObservationPhrases(
                observation, entry["section"], int(entry["priority"]), entry["present"], entry["likely"], entry["possible"],
                entry.get("absent"), entry["impression"],
            )
        missing = [o.value for o in Observation if o is not Observation.NO_FINDING and o not in observations]
        if missing:
            raise ValueError(f"no phrases for {', '.join(missing)}")
        groups = tuple(AbsentGroup(frozenset(Observation(o) for o in g["observations"]), g["sentence"]) for g in raw["absent_groups"])
        thresholds = raw["default_thresholds"]
        return PhraseTable(
            version=raw["version"], present_threshold=float(thresholds["present"]), absent_threshold=float(thresholds["absent"]),
            sections=sections, observations=observations, absent_groups=groups, impression=dict(raw["impression"]),
            ood_reasons=dict(raw["ood_reasons"]), footer=raw["footer"],
            normal_macro=NormalMacro(raw["normal_macro"]["findings"], raw["normal_macro"]["impression"]),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed phrase table: {exc!r}") from exc


@lru_cache(maxsize=4)
def load_phrase_table(name: str = DEFAULT_PHRASE_TABLE) -> PhraseTable:
    if name not in PHRASE_TABLES:
        raise ValueError(f"unknown phrase table {name!r}; known: {', '.join(PHRASE_TABLES)}")
    return parse_phrase_table(json.loads(files("radalign.drafting").joinpath(name).read_text(encoding="utf-8")))
