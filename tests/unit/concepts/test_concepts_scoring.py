from __future__ import annotations

import numpy as np
import pytest

from radalign.concepts.scoring import state_for, to_concept_scores
from radalign.concepts.vocabulary import OBSERVATIONS, Thresholds, load_vocabulary
from schemas.events import Certainty, Observation


def test_thresholds_split_present_uncertain_absent() -> None:
    t = Thresholds(present=0.6, absent=0.4)
    assert state_for(0.6, t) is Certainty.PRESENT
    assert state_for(0.95, t) is Certainty.PRESENT
    assert state_for(0.59, t) is Certainty.UNCERTAIN
    assert state_for(0.4, t) is Certainty.UNCERTAIN
    assert state_for(0.39, t) is Certainty.ABSENT


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        Thresholds(present=0.3, absent=0.5)


def test_scores_follow_chexpert_order_and_per_observation_thresholds() -> None:
    vocab = load_vocabulary()
    probs = np.linspace(0.0, 1.0, len(OBSERVATIONS))
    scores = to_concept_scores(probs)
    assert [s.observation for s in scores] == list(Observation)
    for score, spec, p in zip(scores, vocab.concepts, probs, strict=True):
        assert score.probability == pytest.approx(p)
        assert score.state is state_for(p, spec.thresholds)
    assert scores[0].state is Certainty.ABSENT and scores[-1].state is Certainty.PRESENT


def test_float32_overshoot_is_clipped_and_bad_input_refused() -> None:
    probs = np.full(14, 0.5, dtype=np.float32)
    probs[3] = 1.0000001
    assert to_concept_scores(probs)[3].probability == 1.0
    with pytest.raises(ValueError):
        to_concept_scores(np.full(13, 0.5))
    bad = np.full(14, 0.5)
    bad[2] = np.nan
    with pytest.raises(ValueError):
        to_concept_scores(bad)
