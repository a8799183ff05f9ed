"""Pure core of the concepts stage: model input bytes -> validated array; model outputs +
StudyPreprocessed -> ConceptsInferred. No Kafka, no Triton here (the agent adds those)."""

from __future__ import annotations

import io
from collections.abc import Collection
from datetime import datetime

import numpy as np

from radalign.concepts import EMBED_DIM, INPUT_SIZE, MODEL_NAME
from radalign.concepts.scoring import to_concept_scores
from schemas.events import ConceptsInferred, StageTiming, StudyPreprocessed

STAGE = "concepts"


class InvalidModelInput(ValueError):
    """The claim-checked model input is not a (1, 224, 224) float array in [0, 1]."""


def load_model_input(data: bytes) -> np.ndarray:
    """Decode the preprocess stage's .npy (never pickles) and check what the model expects."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InvalidModelInput(f"not a .npy array: {exc}") from exc
    if array.shape != (1, INPUT_SIZE, INPUT_SIZE):
        raise InvalidModelInput(f"expected shape (1, {INPUT_SIZE}, {INPUT_SIZE}), got {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidModelInput(f"expected a float array, got {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise InvalidModelInput("model input holds NaN or infinity")
    if array.min() < -1e-3 or array.max() > 1 + 1e-3:
        raise InvalidModelInput(f"values outside [0, 1]: [{array.min():.3f}, {array.max():.3f}]")
    return np.clip(array, 0.0, 1.0)


def build_concepts_event(
    event: StudyPreprocessed,
    probabilities: np.ndarray,
    embedding: np.ndarray,
    model_name: str = MODEL_NAME,
    model_version: str = "unknown",
    *,
    started_at: datetime | None = None,
    duration_ms: float | None = None,
    supported: Collection[str] | None = None,
) -> ConceptsInferred:
    """The stage's output event: thresholded concept scores, the re-normalised embedding, and the
    timings so far (plus this stage's, when the caller measured it)."""
    emb = np.asarray(embedding, dtype=np.float64).reshape(-1)
    if emb.shape != (EMBED_DIM,) or not np.isfinite(emb).all():
        raise ValueError(f"embedding must be {EMBED_DIM} finite floats, got shape {emb.shape}")
    norm = float(np.linalg.norm(emb))
    if norm == 0.0:
        raise ValueError("embedding is all zeros")
    timings = list(event.timings)
    if started_at is not None and duration_ms is not None:
        timings.append(StageTiming(stage=STAGE, started_at=started_at, duration_ms=max(0.0, duration_ms)))
    return ConceptsInferred(
        study=event.study,
        view_position=event.view_position,
        lateral_only=event.lateral_only,
        # Only what the model assessed: an observation it never learnt is left out, so drafting
        # neither asserts nor hedges about it.
        concepts=[c for c in to_concept_scores(probabilities) if supported is None or c.observation.value in supported],
        image_embedding=(emb / norm).tolist(),  # re-normalised: float32 transport loses a little
        model_name=model_name,
        model_version=model_version,
        timings=timings,
    )
