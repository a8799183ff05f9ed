"""Retrieval core (pure, no Kafka): nearest cases for a study, re-ranked by label agreement.

RadAlign grounds the drafting LLM in similar historical reports. The aligned image embedding
finds candidates in two indexes (image -> report text, and image -> image where cases carry an
image embedding); the candidates are then re-ranked by how well each case's labels agree with
the concepts the model predicted, because the text encoder ignores negation ("heart is not
enlarged" sits next to "enlarged heart") and embedding similarity alone returns reports that
say the opposite of what the image shows.

Score of a candidate:  score = (1 - w) * cosine + w * label_agreement,  w = label_weight.

Label agreement (in [0, 1]) compares the case's labels with the predicted states, over the
observations the model committed to (predicted present or absent); an observation predicted
uncertain says nothing either way and is skipped. Per committed observation:

    predicted \\ case   present   uncertain   absent   unmentioned
    present              1         0.5         0        0
    absent               0         0.5         1        1

"Unmentioned" counts as absent, CheXpert's convention for a report that does not name a finding
(a normal report rarely lists all 14 negatives). Agreement is the mean credit; with no
committed observation it is 0 for every case, leaving the cosine order unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from radalign.kb.case import Candidate, normalised_report
from radalign.kb.labels import OBSERVATIONS, LabelVector
from schemas.events import CasesRetrieved, Certainty, ConceptScore, ConceptsInferred, RetrievedCase, StageTiming

if TYPE_CHECKING:
    from radalign.config import Settings
    from radalign.kb.store import CaseStore

RETRIEVAL_VERSION = "retrieval-1"

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
        model_name=event.model_name,
        model_version=event.model_version,
        cases=list(cases),
        retrieval_version=retrieval_version,
        timings=timings,
    )


async def retrieve(store: CaseStore, event: ConceptsInferred, settings: Settings) -> list[RetrievedCase]:
    """Candidates from both indexes (concurrently), merged, then re-ranked.

    image -> report: the aligned image embedding lives in the report encoder's space, so it is
    queried against the cases' text embeddings (every case has one). image -> image: against the
    cases that carry an image embedding (empty for a text-only store). A case found by both keeps
    its higher cosine. Image-image cosines tend to run higher than image-text ones, which favours
    cases with images; accepted, since a visually similar study is the stronger precedent, and the
    label term of the score then decides among them.
    """
    kwargs = {
        "k_candidates": settings.retrieval_candidates,
        "exclude_patient_key": event.study.patient_key,
        "ef_search": settings.retrieval_ef_search,
    }
    by_text, by_image = await asyncio.gather(
        store.search(event.image_embedding, by="text", **kwargs),
        store.search(event.image_embedding, by="image", **kwargs),
    )
    return rerank([*by_text, *by_image], event.concepts, settings.retrieval_k, settings.retrieval_label_weight)


async def retrieve_event(
    store: CaseStore, event: ConceptsInferred, settings: Settings, retrieval_version: str = RETRIEVAL_VERSION
) -> CasesRetrieved:
    """`retrieve` plus the outgoing event with this stage's timing (what the agent publishes)."""
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    cases = await retrieve(store, event, settings)
    timing = StageTiming(stage="retrieval", started_at=started_at, duration_ms=(time.perf_counter() - t0) * 1000.0)
    return build_cases_retrieved(event, cases, retrieval_version, timing)
