from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pytest

from radalign.concepts.inference import InvalidModelInput, build_concepts_event, load_model_input
from schemas.events import Certainty, Observation, StageTiming, StudyPreprocessed


def _event() -> StudyPreprocessed:
    from schemas.examples import EXAMPLES

    return StudyPreprocessed.model_validate(EXAMPLES["study_preprocessed"][0])


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_event_carries_thresholded_scores_and_normalised_embedding() -> None:
    event = _event()
    probs = np.zeros(14, dtype=np.float32)
    probs[list(Observation).index(Observation.LUNG_OPACITY)] = 0.9
    probs[list(Observation).index(Observation.PNEUMONIA)] = 0.5
    emb = np.arange(1, 385, dtype=np.float32)
    started = datetime.now(UTC)
    out = build_concepts_event(event, probs, emb, "concept_model", "concepts.v1-abc", started_at=started, duration_ms=12.5)
    states = {c.observation: c.state for c in out.concepts}
    assert states[Observation.LUNG_OPACITY] is Certainty.PRESENT
    assert states[Observation.PNEUMONIA] is Certainty.UNCERTAIN
    assert states[Observation.CARDIOMEGALY] is Certainty.ABSENT
    assert np.linalg.norm(out.image_embedding) == pytest.approx(1.0)
    assert out.study == event.study and out.model_version == "concepts.v1-abc"
    assert out.timings[-1] == StageTiming(stage="concepts", started_at=started, duration_ms=12.5)
    assert out.timings[:-1] == event.timings


def test_only_observations_the_model_learnt_are_reported() -> None:
    probs = np.full(14, 0.5, dtype=np.float32)
    probs[list(Observation).index(Observation.LUNG_OPACITY)] = 0.9
    supported = {Observation.NO_FINDING.value, Observation.LUNG_OPACITY.value}
    out = build_concepts_event(_event(), probs, np.ones(384), "m", "v", supported=supported)
    assert {c.observation.value for c in out.concepts} == supported
    assert {c.observation: c.state for c in out.concepts}[Observation.LUNG_OPACITY] is Certainty.PRESENT


def test_bad_outputs_are_refused() -> None:
    with pytest.raises(ValueError):
        build_concepts_event(_event(), np.zeros(14), np.zeros(384), "m", "v")
    with pytest.raises(ValueError):
        build_concepts_event(_event(), np.zeros(14), np.ones(100), "m", "v")


def test_model_input_is_validated() -> None:
    good = np.random.default_rng(0).random((1, 224, 224)).astype(np.float32)
    np.testing.assert_array_equal(load_model_input(_npy(good)), good)
    for bad in (np.zeros((224, 224), np.float32), np.full((1, 224, 224), 3.0, np.float32), np.zeros((1, 224, 224), np.uint8)):
        with pytest.raises(InvalidModelInput):
            load_model_input(_npy(bad))
    with pytest.raises(InvalidModelInput):
        load_model_input(b"not an npy file")


# ---- the validity gate, OOD abstention and site profiles ---------------------------------------


def _gate(**kw):
    from radalign.concepts.calibration import OperatingPoint
    from radalign.concepts.gate import ServedGate

    raw = {"assessed": ["No Finding", "Pleural Effusion"], "ood_threshold": 4.0,
           "operating_points": {"No Finding": OperatingPoint(0.2, 0.7, 0.9, 0.9), "Pleural Effusion": OperatingPoint(0.1, 0.5, 0.9, 0.9)}}
    return ServedGate(**(raw | kw))


def _probs(**values: float) -> np.ndarray:
    probs = np.full(14, 0.99, dtype=np.float32)  # saturated scores everywhere: must never leak for unassessed observations
    for name, v in values.items():
        probs[[o.value for o in Observation].index(name.replace("_", " "))] = v
    return probs


def test_only_assessed_observations_get_scores_with_the_gate_thresholds() -> None:
    out = build_concepts_event(_event(), _probs(No_Finding=0.8, Pleural_Effusion=0.3), np.ones(384), "m", "v", gate=_gate(), ood_score=1.0)
    scores = {c.observation: c for c in out.concepts}
    assert set(scores) == {Observation.NO_FINDING, Observation.PLEURAL_EFFUSION}
    assert scores[Observation.NO_FINDING].state is Certainty.PRESENT and scores[Observation.NO_FINDING].present_threshold == 0.7
    assert scores[Observation.PLEURAL_EFFUSION].state is Certainty.UNCERTAIN and scores[Observation.PLEURAL_EFFUSION].absent_threshold == 0.1
    assert set(out.not_assessed) == set(Observation) - set(scores) and len(out.not_assessed) == 12
    assert out.ood is None and out.site_profile is None


def test_an_image_far_from_the_training_films_gets_no_assessment() -> None:
    out = build_concepts_event(_event(), _probs(No_Finding=0.8), np.ones(384), "m", "v", gate=_gate(), ood_score=9.5)
    assert out.concepts == [] and set(out.not_assessed) == set(Observation)
    assert out.ood is not None and out.ood.reason == "far_from_training_data" and out.ood.score == 9.5 and out.ood.threshold == 4.0
    # at the threshold itself the image is still in distribution
    assert build_concepts_event(_event(), _probs(), np.ones(384), "m", "v", gate=_gate(), ood_score=4.0).ood is None


def test_a_lateral_only_study_is_never_scored() -> None:
    event = _event().model_copy(update={"lateral_only": True})
    out = build_concepts_event(event, _probs(No_Finding=0.8), np.ones(384), "m", "v", gate=_gate(), ood_score=0.5)
    assert out.concepts == [] and out.ood is not None and out.ood.reason == "lateral_only"


def test_a_site_profile_recalibrates_and_names_itself(tmp_path) -> None:
    from radalign.concepts.gate import save_profile
    from radalign.concepts.inference import select_gate

    site = _gate(name="st-elsewhere", assessed=["No Finding"], recalibration={"No Finding": (1.0, -2.0)}, model_version="v")
    site.operating_points.pop("Pleural Effusion")
    save_profile(site, tmp_path / "st-elsewhere.json")
    shipped = _gate()
    assert select_gate(shipped, "st-elsewhere", tmp_path, "v").name == "st-elsewhere"
    assert select_gate(shipped, "st-elsewhere", tmp_path, "other-version") is shipped  # audited against another model
    assert select_gate(shipped, "unaudited", tmp_path, "v") is shipped
    assert select_gate(shipped, None, tmp_path, "v") is shipped
    with pytest.raises(ValueError):
        select_gate(shipped, "../etc/passwd", tmp_path, "v")
    out = build_concepts_event(_event(), _probs(No_Finding=0.5), np.ones(384), "m", "v", gate=select_gate(shipped, "st-elsewhere", tmp_path, "v"))
    (score,) = out.concepts
    assert score.probability == pytest.approx(1 / (1 + np.exp(2.0)))  # logit(0.5) = 0, then + (-2)
    assert out.site_profile == "st-elsewhere"


def test_non_finite_ood_scores_are_refused() -> None:
    with pytest.raises(ValueError):
        build_concepts_event(_event(), _probs(), np.ones(384), "m", "v", gate=_gate(), ood_score=float("nan"))


def test_a_study_not_chest_by_its_header_is_never_scored_and_needs_no_model() -> None:
    from radalign.concepts.inference import not_chest_radiograph_event
    from schemas.events import ConceptsInferred

    event = _event().model_copy(update={"not_chest_radiograph": True, "lateral_only": True})
    out = not_chest_radiograph_event(event, "concept_model", "v")
    assert out.concepts == [] and set(out.not_assessed) == set(Observation) and out.image_embedding == []
    assert out.ood is not None and out.ood.reason == "not_chest_radiograph" and out.site_profile is None
    assert out.study == event.study and out.timings == event.timings
    # Scores handed in anyway are not used, gate or no gate; the header reason wins over lateral_only.
    for gate in (_gate(), None):
        scored = build_concepts_event(event, _probs(No_Finding=0.9), np.ones(384), "m", "v", gate=gate, ood_score=0.5)
        assert scored.concepts == [] and scored.ood is not None and scored.ood.reason == "not_chest_radiograph"
    with pytest.raises(ValueError, match="run the model"):
        not_chest_radiograph_event(_event())
    # An empty embedding is only valid for that abstention.
    payload = out.model_dump(mode="json")
    ConceptsInferred.model_validate(payload)
    for ood in (None, {"reason": "lateral_only"}):
        with pytest.raises(ValueError, match="image_embedding"):
            ConceptsInferred.model_validate({**payload, "ood": ood})


async def test_the_stage_does_not_call_triton_for_a_study_not_chest_by_its_header(tmp_path) -> None:
    from radalign.concepts.client import TritonConceptClient
    from radalign.config import Settings
    from services.concepts.agent import ConceptsStage

    settings = Settings(state_dir=tmp_path, triton_grpc_url="127.0.0.1:1", triton_timeout_s=0.5)
    stage = ConceptsStage(settings)
    stage.settings = settings
    stage.client = TritonConceptClient(settings.triton_grpc_url, settings.triton_model, settings.triton_timeout_s)  # nothing listens there
    event = _event().model_copy(update={"not_chest_radiograph": True, "site": "HOSP-A"})
    [output] = await stage.handle(event)
    assert output.event.ood is not None and output.event.ood.reason == "not_chest_radiograph"
    assert stage.client.model_version == "unknown"  # Triton was never asked
