from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pytest

from schemas.events import Certainty, Observation, StageTiming, StudyPreprocessed
from radalign.concepts.inference import InvalidModelInput, build_concepts_event, load_model_input


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
