"""Shared helpers of the drafting tests: events built from labels and (real) IU report text."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from radalign.labeler import IUReport
from schemas.events import CasesRetrieved, Certainty, ConceptScore, Observation, RetrievedCase, StudyRef

_PROBABILITY = {Certainty.PRESENT: 0.85, Certainty.UNCERTAIN: 0.5, Certainty.ABSENT: 0.08}


def concepts_from_labels(labels: Mapping[Observation, Certainty]) -> list[ConceptScore]:
    return [ConceptScore(observation=o, probability=_PROBABILITY[c], state=c) for o, c in labels.items()]


def study_ref(study_key: str = "st-0123456789abcdef", pipeline_version: str = "radalign-test") -> StudyRef:
    return StudyRef(
        study_key=study_key, patient_key="pt-fedcba9876543210", received_at=datetime(2026, 11, 27, 20, 0, tzinfo=UTC),
        pipeline_version=pipeline_version,
    )


def make_event(
    labels: Mapping[Observation, Certainty],
    cases: Sequence[tuple[str, str, str]],
    *,
    study_key: str = "st-0123456789abcdef",
    view: str | None = "PA",
) -> CasesRetrieved:
    """`cases`: (case_key, findings, impression), best first."""
    return CasesRetrieved(
        study=study_ref(study_key),
        view_position=view,
        concepts=concepts_from_labels(labels) or [ConceptScore(observation=Observation.NO_FINDING, probability=0.9, state=Certainty.PRESENT)],
        model_name="concept_model",
        model_version="1",
        cases=[
            RetrievedCase(case_key=key, similarity=0.8 - 0.01 * i, label_agreement=0.9, score=1.0 - 0.01 * i, findings=f, impression=imp)
            for i, (key, f, imp) in enumerate(cases)
        ],
        retrieval_version="test",
    )


def agreement(a: Mapping[Observation, Certainty], b: Mapping[Observation, Certainty]) -> float:
    keys = set(a) | set(b)
    return sum(a.get(k) == b.get(k) for k in keys) / max(1, len(keys))


def retrieve_like(
    target: Mapping[Observation, Certainty],
    pool: Sequence[tuple[IUReport, dict[Observation, Certainty]]],
    rng: random.Random,
    *,
    k: int = 3,
    candidates: int = 60,
) -> list[tuple[str, str, str]]:
    """A stand-in for retrieval: of `candidates` random other reports, the k whose labels agree
    most with the target's (what the label-aware re-ranking does)."""
    sample = rng.sample(list(pool), candidates)
    sample.sort(key=lambda item: agreement(target, item[1]), reverse=True)
    return [(r.uid, r.findings, r.impression) for r, _ in sample[:k]]
