"""Case store on a real PostgreSQL + pgvector: idempotent ingest, patient exclusion, ef_search,
label-aware re-ranking. Each module run gets its own database on the session's server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import numpy as np
import pytest

from radalign.config import Settings
from radalign.kb.case import CaseRecord
from radalign.kb.store import CaseStore
from schemas.events import Certainty as C
from schemas.events import ConceptScore, ConceptsInferred, StudyRef
from schemas.events import Observation as O

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kb_settings(embedded_stack: Settings) -> Iterator[Settings]:
    """A fresh, migrated database beside the stack's own (other tests' cases never mix in)."""
    from radalign.testing.stack import fresh_database

    with fresh_database(embedded_stack, "kb_it") as settings:
        yield settings


@pytest.fixture
async def store(kb_settings: Settings) -> AsyncIterator[CaseStore]:
    async with await CaseStore.open(kb_settings) as opened:
        async with opened._pool.connection() as conn:
            await conn.execute("TRUNCATE cases")
        yield opened


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _record(key: str, patient: str, embedding: np.ndarray, labels=None, findings: str | None = None) -> CaseRecord:
    return CaseRecord(
        case_key=key,
        patient_key=patient,
        source="it",
        findings=findings if findings is not None else f"findings of {key}",
        impression="impression",
        labels=labels or {},
        text_embedding=embedding,
        content_hash=f"hash-{key}",
    )


async def test_ingest_iu_twice_changes_nothing_the_second_time(store: CaseStore, kb_settings: Settings):
    labeler = pytest.importorskip("radalign.labeler")
    from radalign.kb.ingest import ingest_drafts, iu_drafts

    try:
        drafts = iu_drafts(kb_settings.deid_secret, labeler.label_sections, limit=300)
    except FileNotFoundError as exc:
        pytest.skip(f"IU reports not installed: {exc}")
    assert len(drafts) > 250

    first = await ingest_drafts(store, drafts, batch_size=128, progress=False)
    assert first.changed == first.embedded == len(drafts)
    async with store._pool.connection() as conn:
        before = await (await conn.execute("SELECT max(updated_at), count(*) FROM cases")).fetchone()

    second = await ingest_drafts(store, iu_drafts(kb_settings.deid_secret, labeler.label_sections, limit=300), progress=False)
    assert (second.changed, second.embedded, second.unchanged) == (0, 0, len(drafts))

    # The SQL guard holds on its own too: upserting identical rows rewrites none.
    async with store._pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT case_key, patient_key, findings, impression, labels, text_embedding, content_hash FROM cases LIMIT 50")
        ).fetchall()
    from radalign.kb.labels import labels_from_json

    same = [
        CaseRecord(case_key=k, patient_key=p, source="iu-openi", findings=f, impression=i, labels=labels_from_json(lab),
                   text_embedding=e.to_numpy() if hasattr(e, "to_numpy") else np.asarray(e), content_hash=h)
        for k, p, f, i, lab, e, h in rows
    ]
    assert await store.upsert_many(same) == 0
    async with store._pool.connection() as conn:
        after = await (await conn.execute("SELECT max(updated_at), count(*) FROM cases")).fetchone()
    assert after == before

    stats = await store.stats()
    assert stats.total == len(drafts) and stats.by_source == {"iu-openi": len(drafts)}
    assert stats.present_counts["No Finding"] > 0


async def test_changed_content_is_rewritten_and_counted(store: CaseStore):
    rng = np.random.default_rng(1)
    records = [_record(f"c{i}", f"pt-{i:016x}", _unit(rng.normal(size=384))) for i in range(5)]
    assert await store.upsert_many(records) == 5
    edited = CaseRecord(**{**records[2].__dict__, "findings": "edited", "content_hash": "hash-edited"})
    assert await store.upsert_many([*records[:2], edited, *records[3:]]) == 1
    hits = await store.search(records[2].text_embedding, 1)
    assert hits[0].case_key == "c2" and hits[0].findings == "edited"


async def test_search_excludes_the_query_patient(store: CaseStore):
    rng = np.random.default_rng(2)
    center = _unit(rng.normal(size=384))
    near = [_unit(center + 0.02 * rng.normal(size=384)) for _ in range(6)]
    far = [_unit(rng.normal(size=384)) for _ in range(30)]
    records = [_record(f"near{i}", "pt-aaaaaaaaaaaaaaaa" if i < 4 else "pt-bbbbbbbbbbbbbbbb", v) for i, v in enumerate(near)]
    records += [_record(f"far{i}", f"pt-{i:016x}", v) for i, v in enumerate(far)]
    await store.upsert_many(records)

    everyone = await store.search(center, 6, ef_search=40)
    assert {c.case_key for c in everyone} == {f"near{i}" for i in range(6)}
    assert everyone[0].similarity > 0.9 and everyone == sorted(everyone, key=lambda c: -c.similarity)

    others = await store.search(center, 6, exclude_patient_key="pt-aaaaaaaaaaaaaaaa", ef_search=40)
    keys = [c.case_key for c in others]
    assert len(keys) == 6, "iterative scan keeps filling k after the filter"
    assert not {f"near{i}" for i in range(4)} & set(keys)
    assert keys[:2] == ["near4", "near5"] or keys[:2] == ["near5", "near4"]

    assert await store.search(center, 3, by="image") == []  # no case has an image embedding


async def test_ef_search_is_honoured_and_does_not_leak(store: CaseStore, kb_settings: Settings):
    # Unclustered high-dimensional points: the hardest case for HNSW, where a small candidate
    # list visibly loses neighbours and a large one finds them.
    rng = np.random.default_rng(3)
    data = _unit(rng.normal(size=(3000, 384)))
    await store.upsert_many([_record(f"r{i}", f"pt-{i:016x}", v) for i, v in enumerate(data)], batch_size=1000)
    queries = _unit(rng.normal(size=(40, 384)))
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10]

    async def recall(ef: int) -> float:
        hits = 0
        for q, truth in zip(queries, exact, strict=True):
            found = {int(c.case_key[1:]) for c in await store.search(q, 10, ef_search=ef)}
            hits += len(found & set(truth.tolist()))
        return hits / exact.size

    low, high = await recall(10), await recall(400)
    print(f"recall@10 at ef_search 10: {low:.3f}, at 400: {high:.3f}")
    assert high >= 0.95
    assert low < high - 0.05, f"recall ef_search=10 {low:.3f} vs 400 {high:.3f}"

    async with store._pool.connection() as conn:
        value = await (await conn.execute("SELECT current_setting('hnsw.ef_search', true)")).fetchone()
    assert value[0] in (None, "", "40"), "SET LOCAL must not outlive the search transaction"


def _event(embedding: np.ndarray, concepts: list[ConceptScore], patient_key: str) -> ConceptsInferred:
    return ConceptsInferred(
        study=StudyRef(study_key="st-00000000000000aa", patient_key=patient_key,
                       received_at=datetime(2025, 1, 1, tzinfo=UTC), pipeline_version="it"),
        view_position="PA",
        concepts=concepts,
        image_embedding=[float(x) for x in embedding],
        model_name="concept_model",
        model_version="it",
    )


async def test_rerank_puts_label_agreeing_cases_first(store: CaseStore, kb_settings: Settings):
    labeler = pytest.importorskip("radalign.labeler")
    from radalign.kb.case import CaseDraft
    from radalign.kb.ingest import ingest_drafts
    from radalign.retrieval.core import retrieve, retrieve_by_embedding
    from radalign.text_encoder import get_text_encoder

    # The text encoder ignores negation: these reports sit close together in embedding space,
    # and only the labels tell them apart.
    texts = [
        ("The heart is not enlarged. No pleural effusion.", "No cardiomegaly."),
        ("Heart size is normal. There is no effusion.", "Normal heart size."),
        ("The heart is not enlarged. Lungs are clear.", "No acute cardiopulmonary abnormality."),
        ("The heart is enlarged. No pleural effusion.", "Cardiomegaly."),
        ("Cardiac silhouette is enlarged. Lungs are clear.", "Cardiomegaly without effusion."),
    ]
    drafts = [
        CaseDraft(case_key=f"it-{i}", patient_key=f"pt-{i:016x}", source="it", findings=f, impression=imp,
                  labels=labeler.label_sections(f, imp))
        for i, (f, imp) in enumerate(texts)
    ]
    enlarged = {d.case_key for d in drafts if d.labels.get(O.CARDIOMEGALY) == C.PRESENT}
    assert enlarged == {"it-3", "it-4"}, "labeler disagrees with the fixture's reading"
    await ingest_drafts(store, drafts, progress=False)

    query = get_text_encoder().encode(["Heart is not enlarged. No effusion."])[0]
    predicted = [
        ConceptScore(observation=O.CARDIOMEGALY, probability=0.92, state=C.PRESENT),
        ConceptScore(observation=O.PLEURAL_EFFUSION, probability=0.05, state=C.ABSENT),
        ConceptScore(observation=O.EDEMA, probability=0.5, state=C.UNCERTAIN),
    ]
    event = _event(query, predicted, patient_key="pt-ffffffffffffffff")
    cosine_only = await retrieve_by_embedding(store, event, kb_settings.model_copy(update={"retrieval_k": 2, "retrieval_label_weight": 0.0}))
    reranked = await retrieve_by_embedding(store, event, kb_settings.model_copy(update={"retrieval_k": 2, "retrieval_label_weight": 0.5}))

    assert {c.case_key for c in cosine_only} != enlarged  # the negated reports look closer
    assert {c.case_key for c in reranked} == enlarged
    assert all(c.label_agreement == 1.0 for c in reranked)
    assert reranked[0].score >= reranked[1].score

    # And the query's own patient never comes back.
    own = _event(query, predicted, patient_key=drafts[3].patient_key)
    assert "it-3" not in {c.case_key for c in await retrieve(store, own, kb_settings)}


async def test_profile_search_in_sql_matches_the_rule_excludes_and_fuses(store: CaseStore, kb_settings: Settings):
    """The store's SQL scores every case as `ConceptProfile.agreement` does, leaves out the
    patient and named cases, breaks ties per study, and fuses the cosine only when weighted."""
    from radalign.kb.labels import encode_label_vector
    from radalign.retrieval.core import ConceptProfile, retrieve

    rng = np.random.default_rng(3)
    label_sets = [
        {O.CARDIOMEGALY: C.PRESENT}, {O.CARDIOMEGALY: C.ABSENT, O.PLEURAL_EFFUSION: C.ABSENT},
        {O.PLEURAL_EFFUSION: C.PRESENT}, {O.CARDIOMEGALY: C.UNCERTAIN}, {O.NO_FINDING: C.PRESENT}, {},
    ]
    vectors = _unit(rng.normal(size=(30, 384)))
    records = [
        _record(f"p-{i:02d}", f"pt-{i % 10:016x}", vectors[i], labels=label_sets[i % len(label_sets)], findings=f"report {i}")
        for i in range(30)
    ]
    await store.upsert_many(records)
    predicted = [
        ConceptScore(observation=O.CARDIOMEGALY, probability=0.85, state=C.PRESENT),
        ConceptScore(observation=O.PLEURAL_EFFUSION, probability=0.2, state=C.ABSENT),
        ConceptScore(observation=O.NO_FINDING, probability=0.3, state=C.ABSENT),
    ]
    profile = ConceptProfile.of(predicted)
    found = await store.search_by_profile(profile.probabilities, profile.weights, 30, exclude_patient_key="pt-0000000000000000",
                                          exclude_case_keys=["p-01"], tie_salt="st-a")
    keys = [c.case_key for c, _ in found]
    assert len(keys) == 30 - 3 - 1 and not {"p-00", "p-10", "p-20", "p-01"} & set(keys)
    for candidate, agreement in found:
        assert agreement == pytest.approx(profile.agreement(candidate.label_vector))
    assert [a for _, a in found] == sorted((a for _, a in found), reverse=True)
    best = max(profile.agreement(encode_label_vector(s)) for s in label_sets)
    assert found[0][1] == pytest.approx(best)
    # ties break by study: same study same order, another study another order among equals
    again = await store.search_by_profile(profile.probabilities, profile.weights, 30, exclude_patient_key="pt-0000000000000000",
                                          exclude_case_keys=["p-01"], tie_salt="st-a")
    other = await store.search_by_profile(profile.probabilities, profile.weights, 30, exclude_patient_key="pt-0000000000000000",
                                          exclude_case_keys=["p-01"], tie_salt="st-b")
    assert [c.case_key for c, _ in again] == keys and [c.case_key for c, _ in other] != keys
    # with an embedding weight, a case equal to the query embedding wins among its label peers
    fused = await store.search_by_profile(profile.probabilities, profile.weights, 5, embedding=vectors[6], embedding_weight=0.5)
    assert fused[0][0].case_key == "p-06" and fused[0][0].similarity == pytest.approx(1.0, abs=1e-4)
    # the stage: top k, the patient excluded, no cases when the model abstained
    event = _event(vectors[6], predicted, patient_key="pt-0000000000000006")
    cases = await retrieve(store, event, kb_settings.model_copy(update={"retrieval_k": 4}))
    assert len(cases) == 4 and all(c.label_agreement == pytest.approx(best) for c in cases)
    assert "p-06" not in {c.case_key for c in cases} and all(c.similarity == 0.0 for c in cases)
