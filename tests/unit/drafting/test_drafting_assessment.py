"""The AI assessment line that ends every delivered text: what the model assessed and what not."""

import uuid
from datetime import UTC, datetime

import pytest

from radalign.reports.assessment import assessed_observations, assessment_line, not_assessed_observations
from schemas.events import Certainty, ConceptScore, Guard, GuardVerdict, Observation, OutOfDistribution, ReportDrafted, StudyRef


def drafted(concepts: dict[Observation, Certainty], not_assessed: list[Observation] | None = None, ood: OutOfDistribution | None = None) -> ReportDrafted:
    study = StudyRef(study_key="st-00112233445566aa", patient_key="pt-0011223344556677", received_at=datetime(2026, 11, 27, 9, 0, tzinfo=UTC), pipeline_version="radalign-test")
    return ReportDrafted(
        study=study, report_id=str(uuid.uuid5(uuid.NAMESPACE_URL, "assessment")), findings="The lungs are clear.",
        impression="No acute abnormality among the assessed findings.",
        concepts=[ConceptScore(observation=o, probability=0.5, state=c) for o, c in concepts.items()],
        not_assessed=[o for o in Observation if o not in concepts] if not_assessed is None else not_assessed, ood=ood,
        case_keys=[], view_position="PA", model_name="concept_model", model_version="1", drafter="deterministic",
        prompt_version="deterministic-v2", guard=Guard(verdict=GuardVerdict.PASSED), needs_review=False,
    )


def test_line_lists_assessed_then_not_assessed_in_chexpert_order():
    # concepts arrive in any order; the line is in CheXpert order, whatever their state
    report = drafted({Observation.PNEUMONIA: Certainty.ABSENT, Observation.LUNG_OPACITY: Certainty.ABSENT, Observation.NO_FINDING: Certainty.PRESENT})
    assert assessment_line(report) == (
        "AI assessment: assessed No Finding, Lung Opacity, Pneumonia; not assessed: Enlarged Cardiomediastinum, Cardiomegaly, "
        "Lung Lesion, Edema, Consolidation, Atelectasis, Pneumothorax, Pleural Effusion, Pleural Other, Fracture, Support Devices."
    )
    reordered = drafted({Observation.NO_FINDING: Certainty.PRESENT, Observation.PNEUMONIA: Certainty.ABSENT, Observation.LUNG_OPACITY: Certainty.ABSENT})
    assert assessment_line(reordered) == assessment_line(report)


def test_everything_assessed_says_so():
    report = drafted(dict.fromkeys(Observation, Certainty.ABSENT))
    assert assessment_line(report).endswith("Support Devices; not assessed: none.")
    assert not_assessed_observations(report) == []


def test_a_listed_not_assessed_observation_wins_and_unscored_ones_count_as_not_assessed():
    # Pneumothorax has a score but is listed as not assessed (as the FHIR output treats it);
    # Edema has neither a score nor a listing: no claim is made about it either
    report = drafted(
        {Observation.CARDIOMEGALY: Certainty.PRESENT, Observation.PNEUMOTHORAX: Certainty.ABSENT},
        not_assessed=[Observation.PNEUMOTHORAX],
    )
    assert assessed_observations(report) == [Observation.CARDIOMEGALY]
    assert Observation.PNEUMOTHORAX in not_assessed_observations(report) and Observation.EDEMA in not_assessed_observations(report)
    assert len(not_assessed_observations(report)) == 13


@pytest.mark.parametrize(
    ("reason", "wording"),
    [
        ("lateral_only", "no frontal view"),
        ("not_chest_radiograph", "not recognised as a frontal chest radiograph"),
        ("far_from_training_data", "unlike the films it was validated on"),
    ],
)
def test_ood_line_gives_the_reason_and_no_claim(reason, wording):
    report = drafted({}, not_assessed=list(Observation), ood=OutOfDistribution(reason=reason, score=3.0, threshold=2.0))
    assert assessment_line(report) == f"AI assessment: none (reason: {wording}); the model made no finding claim."
    assert assessed_observations(report) == []


def test_no_assessed_observation_without_ood_makes_no_claim():
    assert assessment_line(drafted({})) == "AI assessment: none; the model made no finding claim."
