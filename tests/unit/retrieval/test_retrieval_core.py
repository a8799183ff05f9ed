from datetime import UTC, datetime

import numpy as np
import pytest

from radalign.config import Settings
from radalign.kb.case import Candidate
from radalign.kb.labels import encode_label_vector
from radalign.retrieval.core import (
    ConceptProfile,
    build_cases_retrieved,
    dedupe_candidates,
    label_agreement,
    rerank,
    retrieve,
    retrieve_by_embedding,
)
from schemas.events import (
    CasesRetrieved,
    ConceptScore,
    ConceptsInferred,
    StageTiming,
    StudyRef,
)
from schemas.events import Certainty as C
from schemas.events import Observation as O


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


async def test_retrieve_by_embedding_queries_both_indexes_excluding_the_patient_and_reranks():
    store = FakeStore(
        by_text=[cand("t1", 0.62, {O.PLEURAL_EFFUSION: C.PRESENT}), cand("both", 0.55, {O.CARDIOMEGALY: C.PRESENT})],
        by_image=[cand("both", 0.9, {O.CARDIOMEGALY: C.PRESENT}, by="image"), cand("i1", 0.4, {O.CARDIOMEGALY: C.PRESENT}, by="image")],
    )
    settings = Settings(retrieval_k=2, retrieval_candidates=17, retrieval_ef_search=77, retrieval_label_weight=0.5)
    out = await retrieve_by_embedding(store, _event(), settings)
    assert sorted(store.calls) == [("image", 384, 17, "pt-0123456789abcdef", 77), ("text", 384, 17, "pt-0123456789abcdef", 77)]
    assert [c.case_key for c in out] == ["both", "i1"]
    assert out[0].similarity == pytest.approx(0.9)


def test_profile_uses_assessed_observations_weighted_by_confidence():
    profile = ConceptProfile.of([score(O.CARDIOMEGALY, C.PRESENT, 0.9), score(O.EDEMA, C.UNCERTAIN, 0.5), score(O.PNEUMOTHORAX, C.ABSENT, 0.2)])
    i = {o: n for n, o in enumerate(O)}
    assert profile.weights[i[O.CARDIOMEGALY]] == pytest.approx(0.8) and profile.weights[i[O.EDEMA]] == 0.0
    assert profile.weights[i[O.PNEUMOTHORAX]] == pytest.approx(0.6) and profile.weights[i[O.LUNG_OPACITY]] == 0.0  # not assessed
    vector = encode_label_vector
    # cardiomegaly present, pneumothorax unmentioned (absent): (0.8*0.9 + 0.6*0.8) / 1.4
    assert profile.agreement(vector({O.CARDIOMEGALY: C.PRESENT})) == pytest.approx((0.72 + 0.48) / 1.4)
    assert profile.agreement(vector({O.PNEUMOTHORAX: C.PRESENT})) == pytest.approx((0.8 * 0.1 + 0.6 * 0.2) / 1.4)
    assert profile.agreement(vector({O.CARDIOMEGALY: C.UNCERTAIN})) == pytest.approx((0.8 * 0.5 + 0.6 * 0.8) / 1.4)
    # edema (p = 0.5) and unassessed observations do not move the score
    assert profile.agreement(vector({O.CARDIOMEGALY: C.PRESENT, O.EDEMA: C.PRESENT, O.FRACTURE: C.PRESENT})) == pytest.approx(
        profile.agreement(vector({O.CARDIOMEGALY: C.PRESENT}))
    )
    assert not ConceptProfile.of([score(O.EDEMA, C.UNCERTAIN, 0.5)]).informative


class ProfileStore:
    def __init__(self, rows):
        self.rows = rows
        self.calls = []

    async def search_by_profile(self, probabilities, weights, k_candidates=40, **kwargs):
        self.calls.append((tuple(probabilities), tuple(weights), k_candidates, kwargs))
        profile = ConceptProfile(tuple(probabilities), tuple(weights))
        scored = [(c, profile.agreement(c.label_vector)) for c in self.rows]
        return sorted(scored, key=lambda item: -item[1])[:k_candidates]

    async def search(self, *args, **kwargs):
        raise AssertionError("the embedding is not used at weight 0")


async def test_retrieve_by_profile_excludes_the_patient_and_dedupes():
    store = ProfileStore([
        cand("normal", 0.1, {O.CARDIOMEGALY: C.ABSENT}),
        cand("big-heart", 0.2, {O.CARDIOMEGALY: C.PRESENT}),
        cand("big-heart-copy", 0.3, {O.CARDIOMEGALY: C.PRESENT}, findings="report big-heart"),
        cand("effusion", 0.9, {O.PLEURAL_EFFUSION: C.PRESENT}),
    ])
    out = await retrieve(store, _event(), Settings(retrieval_k=2, retrieval_candidates=9))
    assert [c.case_key for c in out] == ["big-heart", "normal"]
    assert out[0].label_agreement > out[1].label_agreement and out[0].score == out[0].label_agreement
    [(_probabilities, _weights, k, kwargs)] = store.calls
    assert k == 9 and kwargs["exclude_patient_key"] == "pt-0123456789abcdef" and kwargs["embedding_weight"] == 0.0
    assert kwargs["embedding"] is None and kwargs["tie_salt"] == "st-0123456789abcdef"


async def test_no_cases_for_an_abstained_or_uninformative_study():
    from schemas.events import OutOfDistribution

    store = ProfileStore([cand("normal", 0.1, {O.CARDIOMEGALY: C.ABSENT})])
    ood = OutOfDistribution.model_validate(
        {"reason": "not_chest_radiograph", "score": 9.0, "threshold": 3.0}
    )
    abstained = _event().model_copy(update={"ood": ood, "concepts": [], "not_assessed": list(O)})
    assert await retrieve(store, abstained, Settings()) == []
    nothing = _event().model_copy(update={"concepts": [score(O.EDEMA, C.UNCERTAIN, 0.5)]})
    assert await retrieve(store, nothing, Settings()) == []
    assert store.calls == []
    out = build_cases_retrieved(abstained, [], "retrieval-test")
    assert out.ood == ood and out.not_assessed == list(O)
