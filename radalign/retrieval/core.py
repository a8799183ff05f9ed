"""Retrieval core (pure, no Kafka): the historical cases that ground a study's draft.

The shipped image->report embedding measured no better than chance on held-out images
(benchmarks/retrieval_bench.py, README "Retrieval"), so cases are found by what the concept
model predicted, not by the embedding: **concept-profile retrieval** ranks the case store's
labelled reports by their expected agreement with the study's predicted concepts.

Profile of a study: for each *assessed* observation (`ConceptsInferred.concepts`; observations in
`not_assessed` make no claim and are skipped) its calibrated probability p and a confidence
weight w = |2p - 1| (a coin-flip prediction says nothing, a confident one counts fully).
Agreement of a case (in [0, 1]):

    agreement = sum_o w_o * credit_o / sum_o w_o,
    credit_o = p_o      if the case says o is present,
               1 - p_o  if it says absent or does not mention o (CheXpert's convention),
               0.5      if it says uncertain,

i.e. the expected share of observations on which the case's label matches the truth, if the
calibrated probabilities are right. Score = (1 - e) * agreement + e * cosine(image, report),
with e = `retrieval_embedding_weight`, 0 unless the embedding beats chance on held-out data.
Ties (many cases share a label set) break by a per-study hash: deterministic, and varied
across studies.

No pretending: a study whose image the model refused (`ood` set) or that has no assessed
observation gets no cases (and no embedding fallback unless its weight is positive).

`retrieve_by_embedding` is the previous method (cosine candidates re-ranked by label agreement
with the predicted states), kept as the baseline the benchmark compares against.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from radalign.kb.case import Candidate, normalised_report
from radalign.kb.labels import OBSERVATIONS, LabelVector
from schemas.events import (
    CasesRetrieved,
    Certainty,
    ConceptScore,
    ConceptsInferred,
    RetrievedCase,
    StageTiming,
    model_provenance,
)

if TYPE_CHECKING:
    from radalign.config import Settings
    from radalign.kb.store import CaseStore

RETRIEVAL_VERSION = "retrieval-2-profile"

_INDEX = {o: i for i, o in enumerate(OBSERVATIONS)}
# credit[predicted][case code]; case codes: 1 present, 0 absent, -1 uncertain, None unmentioned.
_CREDIT: dict[Certainty, dict[int | None, float]] = {
    Certainty.PRESENT: {1: 1.0, -1: 0.5, 0: 0.0, None: 0.0},
    Certainty.ABSENT: {1: 0.0, -1: 0.5, 0: 1.0, None: 1.0},
}


def label_agreement(case_labels: LabelVector, predicted: Sequence[ConceptScore]) -> float:
    """Mean agreement credit of a case's label vector with the predicted states (rule above)."""
    credits = [
        _CREDIT[p.state][case_labels[_INDEX[p.observation]]]
        for p in predicted
        if p.state in _CREDIT
    ]
    return sum(credits) / len(credits) if credits else 0.0


@dataclass(frozen=True)
class ConceptProfile:
    """Calibrated probabilities and confidence weights per observation, in CheXpert order
    (weight 0: not assessed)."""

    probabilities: tuple[float, ...]
    weights: tuple[float, ...]

    @classmethod
    def of(cls, concepts: Sequence[ConceptScore]) -> ConceptProfile:
        probabilities = [0.5] * len(OBSERVATIONS)
        weights = [0.0] * len(OBSERVATIONS)
        for concept in concepts:
            i = _INDEX[concept.observation]
            probabilities[i] = float(concept.probability)
            weights[i] = abs(2.0 * float(concept.probability) - 1.0)
        return cls(tuple(probabilities), tuple(weights))

    @property
    def informative(self) -> bool:
        return sum(self.weights) > 0

    def agreement(self, case_labels: LabelVector) -> float:
        """The expected agreement of a case's labels with the profile (module doc); the store
        computes the same in SQL."""
        total = sum(self.weights)
        if total <= 0:
            return 0.0
        credit = 0.0
        for p, w, code in zip(self.probabilities, self.weights, case_labels, strict=True):
            credit += w * (p if code == 1 else 0.5 if code == -1 else 1.0 - p)
        return credit / total


def dedupe_candidates(candidates: Iterable[Candidate]) -> list[Candidate]:
    """One candidate per case key and per report text (normalised), keeping the most similar;
    sorted by similarity, best first. Merges the text- and image-index results too."""
    best_by_key: dict[str, Candidate] = {}
    for c in candidates:
        kept = best_by_key.get(c.case_key)
        if kept is None or c.similarity > kept.similarity:
            best_by_key[c.case_key] = c
    ordered = sorted(best_by_key.values(), key=lambda c: (-c.similarity, c.case_key))
    seen_texts: set[str] = set()
    unique: list[Candidate] = []
    for c in ordered:
        text = normalised_report(c.findings, c.impression)
        if text in seen_texts:
            continue
        seen_texts.add(text)
        unique.append(c)
    return unique


def rerank(
    candidates: Iterable[Candidate],
    predicted: Sequence[ConceptScore],
    k: int,
    label_weight: float,
) -> list[RetrievedCase]:
    """The `k` best cases by `(1 - w) * cosine + w * agreement`, duplicates removed.

    Same-patient cases are excluded by the store's query already. Ties keep the cosine order.
    """
    if not 0.0 <= label_weight <= 1.0:
        raise ValueError("label_weight must lie in [0, 1]")
    if k < 1:
        return []
    scored = []
    for rank, c in enumerate(dedupe_candidates(candidates)):
        agreement = label_agreement(c.label_vector, predicted)
        score = (1.0 - label_weight) * c.similarity + label_weight * agreement
        scored.append((-score, rank, c, agreement, score))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [
        RetrievedCase(
            case_key=c.case_key,
            similarity=round(c.similarity, 6),
            label_agreement=round(min(max(agreement, 0.0), 1.0), 6),
            score=round(score, 6),
            findings=c.findings,
            impression=c.impression,
        )
        for _, _, c, agreement, score in scored[:k]
    ]


def build_cases_retrieved(
    event: ConceptsInferred,
    cases: Sequence[RetrievedCase],
    retrieval_version: str = RETRIEVAL_VERSION,
    timing: StageTiming | None = None,
) -> CasesRetrieved:
    """The outgoing event: the incoming study context plus the cases; timings accumulate."""
    timings = list(event.timings) + ([timing] if timing is not None else [])
    return CasesRetrieved(
        study=event.study,
        view_position=event.view_position,
        lateral_only=event.lateral_only,
        concepts=list(event.concepts),
        not_assessed=list(event.not_assessed),
        ood=event.ood,
        **model_provenance(event),
        cases=list(cases),
        retrieval_version=retrieval_version,
        timings=timings,
    )


async def retrieve(store: CaseStore, event: ConceptsInferred, settings: Settings) -> list[RetrievedCase]:
    """Concept-profile retrieval (module doc): no cases for an abstained (`ood`) study or one with
    nothing assessed, unless the embedding has a positive weight."""
    if event.ood is not None:
        return []
    profile = ConceptProfile.of(event.concepts)
    weight = settings.retrieval_embedding_weight
    if not profile.informative:
        if weight <= 0:
            return []
        return await retrieve_by_embedding(store, event, settings, label_weight=0.0)
    found = await store.search_by_profile(
        profile.probabilities, profile.weights, settings.retrieval_candidates,
        embedding=event.image_embedding if weight > 0 else None, embedding_weight=weight,
        exclude_patient_key=event.study.patient_key, tie_salt=event.study.study_key,
    )
    cases: list[RetrievedCase] = []
    seen_texts: set[str] = set()
    for candidate, agreement in found:  # the store's order: fused score, then the per-study tie-break
        text = normalised_report(candidate.findings, candidate.impression)
        if text in seen_texts:  # corpora repeat boilerplate reports verbatim
            continue
        seen_texts.add(text)
        score = (1.0 - weight) * agreement + weight * candidate.similarity
        cases.append(
            RetrievedCase(
                case_key=candidate.case_key, similarity=round(candidate.similarity, 6),
                label_agreement=round(min(max(agreement, 0.0), 1.0), 6), score=round(score, 6),
                findings=candidate.findings, impression=candidate.impression,
            )
        )
        if len(cases) == settings.retrieval_k:
            break
    return cases


async def retrieve_by_embedding(
    store: CaseStore, event: ConceptsInferred, settings: Settings, label_weight: float | None = None
) -> list[RetrievedCase]:
    """The previous method: candidates from both embedding indexes (image -> report text, image ->
    image), merged, then re-ranked by `(1 - w) * cosine + w * label agreement` with the predicted
    states. Kept as the benchmark's "today's retrieval" baseline and the fallback when the profile
    is empty and the embedding has a positive weight."""
    kwargs: dict[str, Any] = {
        "k_candidates": settings.retrieval_candidates,
        "exclude_patient_key": event.study.patient_key,
        "ef_search": settings.retrieval_ef_search,
    }
    by_text, by_image = await asyncio.gather(
        store.search(event.image_embedding, by="text", **kwargs),
        store.search(event.image_embedding, by="image", **kwargs),
    )
    weight = settings.retrieval_label_weight if label_weight is None else label_weight
    return rerank([*by_text, *by_image], event.concepts, settings.retrieval_k, weight)

