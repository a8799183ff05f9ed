"""Model probabilities -> per-observation `ConceptScore`s with the concepts file's thresholds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from radalign.concepts.vocabulary import OBSERVATIONS, ConceptVocabulary, Thresholds, load_vocabulary
from schemas.events import Certainty, ConceptScore


def state_for(probability: float, thresholds: Thresholds) -> Certainty:
    if probability >= thresholds.present:
        return Certainty.PRESENT
    if probability < thresholds.absent:
        return Certainty.ABSENT
    return Certainty.UNCERTAIN


def to_concept_scores(probabilities: np.ndarray | Sequence[float], vocabulary: ConceptVocabulary | None = None) -> list[ConceptScore]:
    """One ConceptScore per observation, in CheXpert order; refuses non-finite or mis-shaped input."""
    probs = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if probs.shape != (len(OBSERVATIONS),):
        raise ValueError(f"expected {len(OBSERVATIONS)} probabilities, got shape {np.shape(probabilities)}")
    if not np.isfinite(probs).all():
        raise ValueError("probabilities must be finite")
    probs = np.clip(probs, 0.0, 1.0)  # float32 sigmoid can overshoot by an ulp
    vocabulary = vocabulary or load_vocabulary()
    return [
        ConceptScore(observation=spec.observation, probability=float(p), state=state_for(float(p), spec.thresholds))
        for spec, p in zip(vocabulary.concepts, probs, strict=True)
    ]
