"""The independent guard: it rejects what nothing in the study supports, counts why, and the
drafting core routes OOD and critical studies to review."""

from drafting_helpers import make_event
from prometheus_client import REGISTRY
from test_drafting_guard import ScriptedBackend

from radalign.config import Settings
from radalign.drafting.concepts import Prediction
from radalign.drafting.context import DraftContext
from radalign.drafting.core import DraftingCore
from radalign.drafting.guard import DraftGuard, check_draft
from radalign.drafting.labels import default_labeler
from schemas.events import CasesRetrieved, Certainty, GuardVerdict, Observation, OutOfDistribution

LABELS = {Observation.NO_FINDING: Certainty.ABSENT, Observation.LUNG_OPACITY: Certainty.PRESENT, Observation.PNEUMONIA: Certainty.PRESENT}


def rejections(backend: str, reason: str) -> float:
    return REGISTRY.get_sample_value("radalign_drafting_guard_rejections_total", {"backend": backend, "reason": reason}) or 0.0


def reasons(findings: str, impression: str, labels=LABELS, **kw):
    prediction = Prediction.from_scores(make_event(labels, []).concepts)
    return {r.reason for r in check_draft(findings, impression, prediction, default_labeler(), **kw).rejections}


def test_guard_rejects_what_the_study_does_not_support():
    ok = ("There is an airspace opacity. The findings are consistent with pneumonia.", "Pneumonia.")
    assert reasons(*ok) == set()
    assert reasons("Airspace opacity in the right lower lobe, consistent with pneumonia.", "Pneumonia.") == {"laterality", "location"}
    assert reasons("Airspace opacity consistent with pneumonia, unchanged from the prior exam.", "Pneumonia.") == {"comparison"}
    assert reasons("New airspace opacity consistent with pneumonia.", "Pneumonia.") == {"temporal"}
    # cardiomegaly and effusion are not assessed: neither a positive nor a hedge about them
    assert reasons(ok[0] + " The heart is enlarged.", "Pneumonia.") == {"not_assessed_claim"}
    assert reasons(ok[0] + " Possible small pleural effusion.", "Pneumonia.") == {"not_assessed_claim", "measurement"}
    assert reasons(ok[0] + " Degenerative change of the knee.", "Pneumonia.") == {"off_topic"}
    assert reasons("The lungs are clear.", "No acute disease.") == {"omitted_finding"}
    # a side the study supports is allowed
    assert reasons("Airspace opacity on the right, consistent with pneumonia.", "Pneumonia.", supported_words={"right"}) == set()


async def test_llm_draft_with_an_unsupported_side_falls_back_to_the_structured_draft_and_is_counted():
    before = rejections("scripted:test", "laterality")
    bad = ("Right lower lobe airspace opacity consistent with pneumonia.", "Right lower lobe pneumonia.")
    result = await DraftGuard().run(DraftContext.from_event(make_event(LABELS, [])), ScriptedBackend([bad, bad]))
    assert result.guard.verdict is GuardVerdict.FELL_BACK and result.draft.drafter == "deterministic"
    assert {r.reason for r in result.guard.rejections} >= {"laterality", "location"}
    assert all(r.sentence for r in result.guard.rejections if r.reason == "laterality")
    assert "right" not in result.draft.findings.lower() and result.residual.ok
    assert rejections("scripted:test", "laterality") == before + 2  # the first draft and the regenerated one


async def test_ood_study_goes_to_review_with_no_claim():
    event = make_event(LABELS, [("c1", "The lungs are clear.", "No acute disease.")])
    event = CasesRetrieved.model_validate(
        {
            **event.model_dump(),
            "concepts": [],
            "not_assessed": [o.value for o in Observation],
            "ood": OutOfDistribution(reason="far_from_training_data", score=3.2, threshold=2.0).model_dump(),
        }
    )
    report = await DraftingCore(Settings(), None).draft(event)
    assert report.needs_review and report.ood is not None and report.sections == []
    assert report.not_assessed == list(Observation) and report.footer and report.guard.verdict is GuardVerdict.PASSED
    read = default_labeler().sections(report.findings, report.impression)
    assert all(o is Observation.NO_FINDING for o in read)


async def test_ood_study_is_never_sent_to_the_llm():
    event = make_event(LABELS, [])
    event = CasesRetrieved.model_validate(
        {**event.model_dump(), "concepts": [], "not_assessed": [o.value for o in Observation],
         "ood": OutOfDistribution(reason="not_chest_radiograph").model_dump()}
    )
    backend = ScriptedBackend([("The lungs are clear.", "Normal chest.")])
    report = await DraftingCore(Settings(), backend).draft(event)
    assert backend.prompts == [] and report.drafter == "deterministic"
    assert report.needs_review and "not recognised as a frontal chest radiograph" in report.findings


async def test_report_carries_sections_footer_and_phrase_table_version():
    report = await DraftingCore(Settings(), None).draft(make_event(LABELS, []))
    assert [s.name for s in report.sections] == ["lungs"] and not report.needs_review
    assert report.phrase_table_version == "phrases-v1.1" and "cardiomegaly" in (report.footer or "")
    assert Observation.CARDIOMEGALY in report.not_assessed and Observation.PNEUMONIA not in report.not_assessed


def test_every_structured_draft_passes_the_guard():
    """Random assessed sets, states and calibrated probabilities: the structured draft always
    says exactly what the concepts support (the guard finds nothing), and its labels agree."""
    import random

    from radalign.drafting.deterministic import DeterministicDrafter
    from schemas.events import ConceptScore

    rng = random.Random(5)
    drafter, labeler = DeterministicDrafter(), default_labeler()
    for _ in range(300):
        concepts = []
        for o in Observation:
            if rng.random() < 0.3:
                continue  # not assessed
            lo = rng.uniform(0.1, 0.4)
            hi = rng.uniform(lo + 0.1, 0.9)
            p = rng.random()
            state = Certainty.PRESENT if p >= hi else Certainty.ABSENT if p < lo else Certainty.UNCERTAIN
            concepts.append(ConceptScore(observation=o, probability=p, state=state, present_threshold=hi, absent_threshold=lo))
        prediction = Prediction.from_scores(concepts)
        context = DraftContext(prediction, (), "PA")
        result = drafter.draft(context)
        check = check_draft(result.findings, result.impression, prediction, labeler)
        assert check.ok, (check.describe(), result)
        read = labeler.sections(result.findings, result.impression)
        for c in concepts:
            if c.observation is not Observation.NO_FINDING and c.state is not Certainty.ABSENT:
                assert read.get(c.observation) is c.state, (c, result)
