"""Pure core of the concepts stage: model input bytes -> validated array; model outputs +
StudyPreprocessed -> ConceptsInferred. No Kafka, no Triton here (the agent adds those)."""

from __future__ import annotations

import io
from collections.abc import Collection
from datetime import datetime
from pathlib import Path

import numpy as np

from radalign.concepts import EMBED_DIM, MODEL_NAME
from radalign.concepts.calibration import logit, sigmoid
from radalign.concepts.gate import ServedGate, SiteHeadInfo, load_profile, profile_path
from radalign.concepts.scoring import state_for, to_concept_scores
from radalign.concepts.vocabulary import OBSERVATIONS, Thresholds
from schemas.events import Certainty, ConceptScore, ConceptsInferred, Observation, OutOfDistribution, StageTiming, StudyPreprocessed
from schemas.model_input import INPUT_SIZE

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
    gate: ServedGate | None = None,
    ood_score: float | None = None,
    site_head: SiteHeadInfo | None = None,
) -> ConceptsInferred:
    """The stage's output event: gated concept scores, the re-normalised embedding, and the
    timings so far (plus this stage's, when the caller measured it).

    With a `gate` (the served checkpoint's, or a site profile's): only assessed observations get a
    score, with the gate's operating points; the rest are listed in `not_assessed`. A lateral-only
    study, or an image whose `ood_score` exceeds the gate's threshold, gets no score at all (`ood`
    set, every observation not assessed). Without a gate (a model that predates it), the
    concepts file's thresholds apply to the `supported` observations. A study whose header says
    it is not a chest radiograph is never scored, gate or not (the stage does not even run the
    model for it): the event is then `not_chest_radiograph_event`'s, whatever was passed in."""
    if event.not_chest_radiograph:
        return not_chest_radiograph_event(event, model_name, model_version)
    emb = np.asarray(embedding, dtype=np.float64).reshape(-1)
    if emb.shape != (EMBED_DIM,) or not np.isfinite(emb).all():
        raise ValueError(f"embedding must be {EMBED_DIM} finite floats, got shape {emb.shape}")
    norm = float(np.linalg.norm(emb))
    if norm == 0.0:
        raise ValueError("embedding is all zeros")
    timings = list(event.timings)
    if started_at is not None and duration_ms is not None:
        timings.append(StageTiming(stage=STAGE, started_at=started_at, duration_ms=max(0.0, duration_ms)))
    if gate is None:
        # Only what the model learnt: an observation it never learnt is left out, so drafting
        # neither asserts nor hedges about it.
        concepts = [c for c in to_concept_scores(probabilities) if supported is None or c.observation.value in supported]
        not_assessed = [o for o in OBSERVATIONS if o not in {c.observation for c in concepts}]
        ood = None
    else:
        concepts, not_assessed, ood = gated_scores(probabilities, gate, lateral_only=event.lateral_only, ood_score=ood_score, child=event.child)
    return ConceptsInferred(
        study=event.study,
        view_position=event.view_position,
        lateral_only=event.lateral_only,
        concepts=concepts,
        not_assessed=not_assessed,
        ood=ood,
        site_profile=None if gate is None or gate.name == "shipped" or site_head is not None else gate.name,
        site=event.site,
        site_head=site_head.site if site_head else None,
        site_head_version=site_head.version if site_head else None,
        image_embedding=(emb / norm).tolist(),  # re-normalised: float32 transport loses a little
        model_name=model_name,
        model_version=model_version,
        timings=timings,
    )


def not_chest_radiograph_event(event: StudyPreprocessed, model_name: str = MODEL_NAME, model_version: str = "unknown") -> ConceptsInferred:
    """The stage's output for a study whose DICOM header says it is not a chest radiograph: no
    assessment (`ood` reason not_chest_radiograph), no embedding, and the model is not run (its
    scores and embedding of a knee film would mean nothing; retrieval skips abstained studies)."""
    if not event.not_chest_radiograph:
        raise ValueError("the study is not flagged not_chest_radiograph: run the model")
    return ConceptsInferred(
        study=event.study,
        view_position=event.view_position,
        lateral_only=event.lateral_only,
        concepts=[],
        not_assessed=list(OBSERVATIONS),
        ood=OutOfDistribution(reason="not_chest_radiograph"),
        site=event.site,
        image_embedding=[],
        model_name=model_name,
        model_version=model_version,
        timings=list(event.timings),
    )


def gated_scores(
    probabilities: np.ndarray, gate: ServedGate, *, lateral_only: bool = False, ood_score: float | None = None, child: bool = False
) -> tuple[list[ConceptScore], list[Observation], OutOfDistribution | None]:
    """(scores of the assessed observations, the not-assessed ones, the abstention if any). A
    child's film (by its DICOM header) at a model validated on adults only is unlike its training
    data whatever its features say: reason far_from_training_data, no score."""
    probs = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if probs.shape != (len(OBSERVATIONS),) or not np.isfinite(probs).all():
        raise ValueError(f"expected {len(OBSERVATIONS)} finite probabilities, got shape {probs.shape}")
    if ood_score is not None and not np.isfinite(ood_score):
        raise ValueError("OOD score must be finite")
    ood = None
    if lateral_only:
        ood = OutOfDistribution(reason="lateral_only")
    elif child and not gate.validated_on_children:
        ood = OutOfDistribution(reason="far_from_training_data")
    elif ood_score is not None and gate.ood_threshold is not None and ood_score > gate.ood_threshold:
        ood = OutOfDistribution(reason="far_from_training_data", score=float(ood_score), threshold=gate.ood_threshold)
    if ood is not None:
        return [], list(OBSERVATIONS), ood
    concepts = []
    for k, obs in enumerate(OBSERVATIONS):
        if obs.value not in gate.assessed or obs.value not in gate.operating_points:
            continue
        p = float(np.clip(probs[k], 0.0, 1.0))
        if obs.value in gate.recalibration:  # a site profile's calibration on top of the served one
            a, b = gate.recalibration[obs.value]
            p = float(sigmoid(np.array(a * logit(np.array(p)) + b)))
        if gate.policy is not None:
            rule = gate.policy.observations.get(obs.value)
            if rule is None or (state := rule.state(p)) not in rule.allowed:
                continue  # no measured right to this claim on this film: not assessed
            figure = {Certainty.PRESENT: rule.present_precision, Certainty.UNCERTAIN: rule.hedge_precision, Certainty.ABSENT: rule.npv}[state]
            concepts.append(ConceptScore(observation=obs, probability=p, state=state, present_threshold=rule.present, absent_threshold=rule.absent,
                                         claim_precision=figure.lower_bound, claim_films=figure.films))  # fmt: skip
            continue
        point = gate.operating_points[obs.value]
        state = state_for(p, Thresholds(present=point.present, absent=point.absent))
        concepts.append(ConceptScore(observation=obs, probability=p, state=state, present_threshold=point.present, absent_threshold=point.absent))
    assessed = {c.observation for c in concepts}
    return concepts, [o for o in OBSERVATIONS if o not in assessed], None


def select_gate(shipped: ServedGate | None, site: str | None, profiles_dir: str | Path | None, model_version: str | None = None) -> ServedGate | None:
    """The site's audit profile (`<profiles_dir>/<site>.json`) when one exists and was audited
    against the served model version, else the shipped gate: a site without a (current) audit
    gets the shipped, conservative gate."""
    if site and profiles_dir:
        path = profile_path(profiles_dir, site)
        if path.is_file():
            profile = load_profile(path)
            if profile.model_version is None or model_version is None or profile.model_version == model_version:
                return profile
    return shipped
