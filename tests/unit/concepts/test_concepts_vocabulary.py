from __future__ import annotations

import json

import pytest

from radalign.concepts.vocabulary import ANCHOR_STATES, CONCEPTS_FILE, OBSERVATIONS, load_vocabulary, parse_vocabulary
from schemas.events import Observation


def test_concepts_file_lists_the_14_observations_with_statements_and_criteria() -> None:
    vocab = load_vocabulary()
    assert vocab.version == "concepts.v1"
    assert tuple(c.observation for c in vocab.concepts) == tuple(Observation)
    for spec in vocab.concepts:
        assert spec.description and spec.criteria
        assert all(spec.statements[state] for state in ANCHOR_STATES)
        assert 0 <= spec.thresholds.absent <= spec.thresholds.present <= 1


def test_a_file_out_of_order_is_refused() -> None:
    raw = json.loads(CONCEPTS_FILE.read_text())
    raw["observations"][0], raw["observations"][1] = raw["observations"][1], raw["observations"][0]
    with pytest.raises(ValueError, match="order"):
        parse_vocabulary(raw)


def test_anchor_texts_are_per_observation() -> None:
    texts = load_vocabulary().anchor_texts(ANCHOR_STATES[0])
    assert len(texts) == len(OBSERVATIONS)
    assert any("pleural effusion" in t.lower() for t in texts[OBSERVATIONS.index(Observation.PLEURAL_EFFUSION)])
