from datetime import UTC, datetime

import numpy as np
import pytest

from radalign.config import Settings
from radalign.kb.case import Candidate
from radalign.kb.labels import encode_label_vector
from schemas.events import CasesRetrieved, ConceptScore, ConceptsInferred, StageTiming, StudyRef
from schemas.events import Certainty as C
from schemas.events import Observation as O
from radalign.retrieval.core import build_cases_retrieved, dedupe_candidates, label_agreement, rerank, retrieve


def score(observation, state, p=None):
    p = {C.PRESENT: 0.9, C.ABSENT: 0.1, C.UNCERTAIN: 0.5}[state] if p is None else p
    return ConceptScore(observation=observation, probability=p, state=state)


def cand(key, similarity, labels, findings=None, by="text"):
    return Candidate(
        case_key=key,
        findings=findings if findings is not None else f"report {key}",
        impression="impression",
        label_vector=encode_label_vector(labels),
        similarity=similarity,
        by=by,
    )


PREDICTED = [score(O.CARDIOMEGALY, C.PRESENT), score(O.PLEURAL_EFFUSION, C.ABSENT), score(O.EDEMA, C.UNCERTAIN)]


@pytest.mark.parametrize(
    "case_labels, expected",
    [
        ({O.CARDIOMEGALY: C.PRESENT, O.PLEURAL_EFFUSION: C.ABSENT}, 1.0),
        ({O.CARDIOMEGALY: C.PRESENT}, 1.0),  # unmentioned effusion counts as absent
        ({O.CARDIOMEGALY: C.UNCERTAIN}, 0.75),  # uncertain earns half
        ({O.PLEURAL_EFFUSION: C.PRESENT}, 0.0),  # cardiomegaly unmentioned, effusion contradicts
        ({O.CARDIOMEGALY: C.PRESENT, O.PLEURAL_EFFUSION: C.UNCERTAIN}, 0.75),
        # the predicted-uncertain observation is not scored either way
        ({O.CARDIOMEGALY: C.PRESENT, O.EDEMA: C.PRESENT}, 1.0),
        ({O.CARDIOMEGALY: C.PRESENT, O.EDEMA: C.ABSENT}, 1.0),
    ],
)
def test_label_agreement_rule(case_labels, expected):
    assert label_agreement(encode_label_vector(case_labels), PREDICTED) == pytest.approx(expected)


def test_label_agreement_without_committed_predictions_is_zero():
    assert label_agreement(encode_label_vector({O.EDEMA: C.PRESENT}), [score(O.EDEMA, C.UNCERTAIN)]) == 0.0


def test_rerank_weight_zero_keeps_cosine_order_and_weight_one_orders_by_agreement():
    candidates = [
        cand("contradicts", 0.9, {O.PLEURAL_EFFUSION: C.PRESENT}),
        cand("half", 0.8, {O.CARDIOMEGALY: C.UNCERTAIN}),
        cand("agrees", 0.7, {O.CARDIOMEGALY: C.PRESENT}),
    ]
    assert [c.case_key for c in rerank(candidates, PREDICTED, 3, 0.0)] == ["contradicts", "half", "agrees"]
    assert [c.case_key for c in rerank(candidates, PREDICTED, 3, 1.0)] == ["agrees", "half", "contradicts"]
    best = rerank(candidates, PREDICTED, 1, 0.5)
    assert [c.case_key for c in best] == ["agrees"]
    assert best[0].score == pytest.approx(0.5 * 0.7 + 0.5 * 1.0)
    assert best[0].label_agreement == 1.0 and best[0].similarity == pytest.approx(0.7)


def test_rerank_ties_keep_cosine_order_and_k_limits():
    candidates = [cand(f"c{i}", 0.9 - i * 0.01, {O.CARDIOMEGALY: C.PRESENT}) for i in range(6)]
    out = rerank(candidates, PREDICTED, 4, 0.5)
    assert [c.case_key for c in out] == ["c0", "c1", "c2", "c3"]
    assert rerank(candidates, PREDICTED, 0, 0.5) == []
    with pytest.raises(ValueError):
        rerank(candidates, PREDICTED, 3, 1.5)


def test_dedupe_merges_case_keys_and_identical_texts_keeping_the_most_similar():
    candidates = [
        cand("a", 0.6, {}, findings="No acute disease.", by="text"),
        cand("a", 0.8, {}, findings="No acute disease.", by="image"),
        cand("b", 0.7, {}, findings="no acute   DISEASE", by="text"),  # same text, other case
        cand("c", 0.5, {}, findings="Large effusion.", by="text"),
    ]
    out = dedupe_candidates(candidates)
    assert [(c.case_key, c.similarity, c.by) for c in out] == [("a", 0.8, "image"), ("c", 0.5, "text")]


def _event(patient_key="pt-0123456789abcdef"):
    return ConceptsInferred(
        study=StudyRef(
            study_key="st-0123456789abcdef",
            patient_key=patient_key,
            received_at=datetime(2025, 1, 1, tzinfo=UTC),
            pipeline_version="radalign-test",
        ),
        view_position="PA",
        concepts=PREDICTED,
        image_embedding=list(np.full(384, 1 / np.sqrt(384))),
        model_name="concept_model",
        model_version="1",
        timings=[StageTiming(stage="concepts", started_at=datetime(2025, 1, 1, tzinfo=UTC), duration_ms=3.0)],
    )


def test_build_cases_retrieved_carries_study_context_and_appends_timing():
    event = _event()
    cases = rerank([cand("agrees", 0.7, {O.CARDIOMEGALY: C.PRESENT})], PREDICTED, 5, 0.5)
    timing = StageTiming(stage="retrieval", started_at=datetime(2025, 1, 1, tzinfo=UTC), duration_ms=1.5)
    out = build_cases_retrieved(event, cases, "retrieval-test", timing)
    assert isinstance(out, CasesRetrieved)
    assert out.study == event.study and out.concepts == event.concepts and out.view_position == "PA"
    assert [c.case_key for c in out.cases] == ["agrees"] and out.retrieval_version == "retrieval-test"
    assert [t.stage for t in out.timings] == ["concepts", "retrieval"]
    CasesRetrieved.model_validate_json(out.model_dump_json())  # round-trips the contract


class FakeStore:
    def __init__(self, by_text, by_image):
        self.results = {"text": by_text, "image": by_image}
        self.calls = []

    async def search(self, embedding, k_candidates=40, exclude_patient_key=None, ef_search=100, by="text"):
        self.calls.append((by, len(embedding), k_candidates, exclude_patient_key, ef_search))
        return self.results[by]


async def test_retrieve_queries_both_indexes_excluding_the_patient_and_reranks():
    store = FakeStore(
        by_text=[cand("t1", 0.62, {O.PLEURAL_EFFUSION: C.PRESENT}), cand("both", 0.55, {O.CARDIOMEGALY: C.PRESENT})],
        by_image=[cand("both", 0.9, {O.CARDIOMEGALY: C.PRESENT}, by="image"), cand("i1", 0.4, {O.CARDIOMEGALY: C.PRESENT}, by="image")],
    )
    settings = Settings(retrieval_k=2, retrieval_candidates=17, retrieval_ef_search=77, retrieval_label_weight=0.5)
    out = await retrieve(store, _event(), settings)
    assert sorted(store.calls) == [("image", 384, 17, "pt-0123456789abcdef", 77), ("text", 384, 17, "pt-0123456789abcdef", 77)]
    assert [c.case_key for c in out] == ["both", "i1"]
    assert out[0].similarity == pytest.approx(0.9)
