"""`radalign eval reports` pieces: label F1 arithmetic, unknown labels, grounding flags, the
retrieval baseline's patient exclusion, lexical metrics, and a small end-to-end run on IU."""

import numpy as np
import pytest

from radalign.drafting.evaluate import (
    DRAFT,
    RETRIEVED,
    TEMPLATE,
    KnowledgeCase,
    Study,
    clinical_scores,
    evaluate_studies,
    grounding_flags,
    kb_vectors,
    label_agreement_scores,
    lexical_scores,
    normal_template,
    oracle_concepts,
    retrieve_top1,
)
from radalign.drafting.labels import default_labeler
from schemas.events import Certainty, Observation

P, A = Certainty.PRESENT, Certainty.ABSENT
Obs = Observation


def test_micro_and_macro_f1_by_hand():
    predicted = [{Obs.CARDIOMEGALY: P, Obs.EDEMA: P}, {Obs.CARDIOMEGALY: P}, {Obs.NO_FINDING: P}]
    references = [{Obs.CARDIOMEGALY: P, Obs.EDEMA: A}, {Obs.CARDIOMEGALY: A}, {Obs.NO_FINDING: P, Obs.CARDIOMEGALY: P}]
    scores = clinical_scores(predicted, references, n_boot=50)
    # cardiomegaly: tp 1, fp 1, fn 1; edema: fp 1; no finding: tp 1
    micro = scores.micro["14"]
    assert micro["precision"] == pytest.approx(2 / 4) and micro["recall"] == pytest.approx(2 / 3)
    assert micro["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert scores.per_observation["Cardiomegaly"]["f1"] == pytest.approx(0.5)
    assert scores.macro["14"]["f1"] == pytest.approx((0.5 + 1.0) / 2)  # observations with a positive reference
    assert scores.micro["13 (no NF)"]["f1"] == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))
    assert micro["f1_low"] <= micro["f1"] <= micro["f1_high"]


def test_unknown_reference_labels_are_left_out():
    predicted = [{Obs.FRACTURE: P, Obs.EDEMA: P}]
    scores = clinical_scores(predicted, [{Obs.FRACTURE: None, Obs.EDEMA: P}], n_boot=10)
    assert scores.micro["14"]["precision"] == 1.0 and scores.per_observation["Fracture"]["known"] == 0


def test_grounding_flags_name_what_the_concepts_do_not_support():
    labels = {Obs.NO_FINDING: A, Obs.PNEUMONIA: P, Obs.LUNG_OPACITY: P}
    study = Study("s1", "p1", dict(labels), oracle_concepts(labels, unmentioned=None))
    labeler = default_labeler()
    flags = grounding_flags(("Right lower lobe opacity, new since the prior. The heart is enlarged.", "Pneumonia."), study, labeler)
    assert flags == {"unsupported_positive": False, "not_assessed_claim": True, "unsupported_laterality_location": True,
                     "unsupported_comparison_temporal": True, "omitted_present": False}
    flags = grounding_flags(normal_template(), study, labeler)
    assert flags["omitted_present"] and not flags["not_assessed_claim"]  # it says nothing positive, but omits pneumonia


def test_retrieval_baseline_never_returns_the_same_patient():
    kb = [
        KnowledgeCase("k1", "p1", "Cardiomegaly.", "Cardiomegaly.", {Obs.CARDIOMEGALY: P}),
        KnowledgeCase("k2", "p2", "Heart size is normal.", "Normal.", {Obs.CARDIOMEGALY: A}),
    ]
    labels = {Obs.CARDIOMEGALY: P}
    study = Study("s1", "p1", dict(labels), oracle_concepts(labels))
    scores = label_agreement_scores(kb_vectors(kb), study.concepts)
    assert scores[0] > scores[1]
    assert retrieve_top1(study, kb, kb_vectors(kb), label_agreement_scores).key == "k2"  # k1 is the same patient


def test_lexical_scores_rank_a_copy_above_an_unrelated_text():
    refs = ["The heart is normal in size. The lungs are clear.", "There is a large pleural effusion."]
    same = lexical_scores(refs, refs, meteor=False, n_boot=20)
    other = lexical_scores(["Fracture of the femur.", "Knee effusion."], refs, meteor=False, n_boot=20)
    assert same["BLEU-4"] > 0.9 and same["ROUGE-L"] == pytest.approx(1.0) and other["ROUGE-L"] < 0.3
    assert same["CIDEr"] > other["CIDEr"]


def test_small_iu_run_has_every_system_and_the_draft_is_grounded(labelled_iu):
    labeler = default_labeler()
    kb = [KnowledgeCase(f"k-{r.uid}", f"iu:{r.uid}", r.findings, r.impression, dict(labels)) for r, labels in labelled_iu[:300]]
    studies = [
        Study(f"iu-{r.uid}", f"iu:{r.uid}", {o: labels.get(o, A) for o in Obs}, oracle_concepts(labels), reference=(r.findings, r.impression))
        for r, labels in labelled_iu[-60:]
    ]
    ev = evaluate_studies(studies, set_name="iu", mode="oracle", split="test", kb=kb, labeler=labeler, meteor=False, progress=False)
    systems = {s.name: s for s in ev.systems}
    assert set(systems) == {DRAFT, TEMPLATE, RETRIEVED}
    draft = systems[DRAFT]
    assert draft.clinical.micro["14"]["f1"] > systems[TEMPLATE].clinical.micro["14"]["f1"]
    assert draft.grounding["unsupported_laterality_location"] == 0 and draft.grounding["unsupported_comparison_temporal"] == 0
    assert draft.grounding["not_assessed_claim"] == 0 and draft.grounding["unsupported_positive"] == 0
    assert np.isfinite(draft.lexical["ROUGE-L"]) and "ROUGE-L_minus_template" in draft.lexical
