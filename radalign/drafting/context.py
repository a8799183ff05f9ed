"""What a drafter may know about a study (no identifiers), and the prompt built from it.

Shared by every drafter: the structured deterministic drafter, the LLM backends and the prompt
builder (`radalign.drafting.prompt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from radalign.drafting.concepts import Prediction
from radalign.drafting.sanitise import sanitise
from schemas.events import CasesRetrieved, Priority, RetrievedCase

PromptForm = Literal["chat", "completion"]


@dataclass(frozen=True)
class ExampleCase:
    """A retrieved case as the prompt shows it: prior comparisons already removed."""

    case_key: str
    similarity: float
    findings: str
    impression: str


@dataclass(frozen=True)
class DraftContext:
    """Everything a drafter may know about the study: no identifiers."""

    prediction: Prediction
    cases: tuple[ExampleCase, ...]
    view_position: str | None
    lateral_only: bool = False
    priority: Priority = Priority.ROUTINE
    #: Words that something in this study supports and the guard therefore allows (e.g. a side
    #: from a localisation model); none today: the concept model carries no location.
    supported_words: frozenset[str] = frozenset()
    #: The sending site: its normal report macro applies to a likely-normal film.
    site: str | None = None

    @classmethod
    def from_event(cls, event: CasesRetrieved, *, max_cases: int = 3) -> DraftContext:
        return cls(
            prediction=Prediction.from_scores(event.concepts, ood=event.ood),
            cases=tuple(example_cases(event.cases, max_cases=max_cases)),
            view_position=event.view_position,
            lateral_only=event.lateral_only,
            priority=event.study.priority,
            site=event.site,
        )

    def study_context(self) -> str:
        view = (self.view_position or "unknown").upper()
        kind = "lateral chest radiograph only" if self.lateral_only else "chest radiograph"
        urgency = ", urgent (stat) request" if self.priority is Priority.STAT else ""
        return f"{kind}, view {view}{urgency}"


@dataclass(frozen=True)
class DraftPrompt:
    version: str
    form: PromptForm
    context: DraftContext
    messages: tuple[dict[str, str], ...] = ()
    text: str = ""
    stop: tuple[str, ...] = ()
    max_tokens: int = 256
    json_schema: dict[str, Any] | None = None
    corrections: tuple[str, ...] = field(default_factory=tuple)


def example_cases(cases: Sequence[RetrievedCase], *, max_cases: int) -> list[ExampleCase]:
    """The best `max_cases` cases (by re-ranking score) whose text survives sanitising (no side,
    location, size, comparison, time, device position or history of another patient)."""
    chosen: list[ExampleCase] = []
    for case in sorted(cases, key=lambda c: c.score, reverse=True):
        findings, impression = sanitise(case.findings), sanitise(case.impression)
        if findings and impression:
            chosen.append(ExampleCase(case.case_key, case.similarity, findings, impression))
        if len(chosen) >= max_cases:
            break
    return chosen
