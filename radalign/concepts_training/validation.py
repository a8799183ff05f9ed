"""What training decides on held-out data, never the test split: Platt calibration and operating
points (validation split), the OOD detector (fitted on training films, threshold from validation
films), leave-one-source-out re-trainings (each scored on the left-out source's non-test films),
and the validity gate built from them. Everything lands in the checkpoint's calibrator / OOD
buffers and in `meta` (`gate`, `gate_decisions`, `loso`, `calibration`, `ood`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from radalign.concepts.calibration import PlattCalibrator, sigmoid
from radalign.concepts.gate import GateCriteria, ServedGate, auc_or_none, decide_gate, strata_failures
from radalign.concepts.ood import choose_threshold, fit_feature_distance, pool, score
from radalign.concepts.policy import PolicyCriteria
from radalign.concepts.vocabulary import OBSERVATIONS
from radalign.concepts_training.calibration import choose_operating_point, expected_calibration_error, fit_platt
from radalign.concepts_training.metrics import bootstrap_aucs

if TYPE_CHECKING:
    from radalign.concepts.checkpoint import Checkpoint
    from radalign.concepts_training.data import Record
    from radalign.concepts_training.train import TrainConfig

log = logging.getLogger(__name__)

FeatureFn = Callable[[list[int]], torch.Tensor]
#: The trainer (`radalign.concepts_training.train.train`): TrainConfig -> a result with `.checkpoint`.
Retrain = Callable[["TrainConfig"], Any]
#: A source needs this many films to be left out (and its figures to mean something).
MIN_LOSO_ROWS = 50


def supported_mask(ckpt: Checkpoint) -> np.ndarray:
    """(14,) bool: the observations the checkpoint's training data held both classes of."""
    return cast(torch.Tensor, ckpt.head.supported).numpy().astype(bool)


def head_logits(ckpt: Checkpoint, features: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    """Raw (uncalibrated) logits of the head; unsupported observations are 0."""
    out = []
    with torch.inference_mode():
        for s in range(0, len(features), batch_size):
            out.append(ckpt.head(features[s : s + batch_size].float()).logits.numpy())
    return np.concatenate(out) if out else np.zeros((0, len(OBSERVATIONS)), dtype=np.float32)


def calibrated(ckpt: Checkpoint, logits: np.ndarray) -> np.ndarray:
    """Probabilities as the served model computes them (calibrator, then 0.5 where unsupported)."""
    scale = ckpt.calibrator.scale.numpy() if ckpt.calibrator is not None else 1.0
    bias = ckpt.calibrator.bias.numpy() if ckpt.calibrator is not None else 0.0
    probs = sigmoid(logits * scale + bias)
    return np.where(supported_mask(ckpt)[None, :], probs, 0.5)


def _ece_table(probs: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    return {o.value: expected_calibration_error(probs[:, k], labels[:, k]) for k, o in enumerate(OBSERVATIONS)}


def leave_one_source_out(
    cfg: TrainConfig, records: Sequence[Record], split: dict[str, list[int]], labels: np.ndarray, feature_fn: FeatureFn, retrain: Retrain
) -> dict[str, Any]:
    """Per source with >= MIN_LOSO_ROWS films: train without it (same config), score its films.
    Returns {source: {"non_test": {obs: AUC or None}, "all": [AUC rows with CIs], "checkpoint": path}}."""
    from radalign.concepts.checkpoint import jsonable, load_checkpoint

    test = set(split["test"])
    sources = sorted({r.source for r in records})
    out: dict[str, Any] = {}
    for source in sources:
        rows = [i for i, r in enumerate(records) if r.source == source]
        if len(rows) < MIN_LOSO_ROWS or len(sources) < 2:
            continue
        sub_out = Path(cfg.cache_dir) / "loso" / f"{Path(cfg.out).stem}-without-{source}.pt"
        log.info("leave-one-source-out: training without %s (%d films)", source, len(rows))
        sub_cfg = replace(cfg, out=sub_out, exclude_sources=(*cfg.exclude_sources, source), loso=False)
        wanted = jsonable({k: v for k, v in asdict(sub_cfg).items() if k not in ("progress", "resume")})
        sub = load_checkpoint(sub_out) if sub_out.is_file() else None
        if sub is None or sub.meta.get("train") != wanted or sub.meta.get("manifest_fingerprint") != _fingerprint_without(records, source):
            sub = load_checkpoint(retrain(sub_cfg).checkpoint)
        else:
            log.info("leave-one-source-out: reusing %s (same config and films)", sub_out)
        probs = calibrated(sub, head_logits(sub, feature_fn(rows)))
        y = labels[rows]
        non_test = np.array([i not in test for i in rows])
        # an observation the re-trained model never learnt (only this source labels it) answers a
        # constant 0.5: not measurable by leaving this source out, rather than "collapsed"
        learnt = supported_mask(sub)
        y = np.where(learnt[None, :], y, np.nan)
        out[source] = {
            "checkpoint": str(sub_out),
            "films": len(rows),
            "non_test": {o.value: auc_or_none(probs[non_test, k], y[non_test, k], min_class=10) for k, o in enumerate(OBSERVATIONS)},
            "all": [asdict(r) | {"observation": r.observation.value} for r in bootstrap_aucs(probs, y, n_boot=500, seed=cfg.seed)],
            "learnt": sub.meta.get("supported_observations", []),
        }
    return out


def _fingerprint_without(records: Sequence[Record], source: str) -> str:
    from radalign.concepts_training.data import manifest_fingerprint

    return manifest_fingerprint([r for r in records if r.source != source])


def validate_and_gate(
    ckpt: Checkpoint, cfg: TrainConfig, records: Sequence[Record], split: dict[str, list[int]], labels: np.ndarray, feature_fn: FeatureFn,
    *, retrain: Retrain,
) -> Checkpoint:
    """Calibrate, choose operating points, fit the OOD detector and decide the gate, on
    validation data only. `retrain` (the trainer, passed in: training calls this module) re-trains
    without a source for the leave-one-source-out check."""
    val_idx, train_idx = split["val"], split["train"]
    val_feats = feature_fn(val_idx)
    val_labels = labels[val_idx]
    val_logits = head_logits(ckpt, val_feats)
    supported = supported_mask(ckpt)

    # 1. calibration (validation)
    val_probs = _calibrate(ckpt, val_logits, val_labels, supported)
    # 2. OOD detector: fitted on training films, threshold from validation films
    ood_threshold = _fit_ood(ckpt, cfg, feature_fn, train_idx, val_feats)

    # 3. leave-one-source-out (the main run only: sub-runs are the re-trainings themselves)
    loso = leave_one_source_out(cfg, records, split, labels, feature_fn, retrain) if cfg.loso and not cfg.finetune and not cfg.exclude_sources else {}
    ckpt.meta["loso"] = loso

    # 4. gate + operating points (validation)
    criteria = GateCriteria()
    decisions = decide_gate(val_probs, val_labels, loso={s: v["non_test"] for s, v in loso.items()}, criteria=criteria, supported=supported.tolist())
    points = {}
    for k, obs in enumerate(OBSERVATIONS):
        point = choose_operating_point(val_probs[:, k], val_labels[:, k], sensitivity=cfg.sensitivity, specificity=cfg.specificity) if supported[k] else None
        if point is not None:
            points[obs.value] = point
    assessed = [d.observation for d in decisions if d.assessed and d.observation in points]
    gate = ServedGate(assessed=assessed, operating_points={o: points[o] for o in assessed}, ood_threshold=ood_threshold)
    ckpt.meta["gate_criteria"] = criteria.to_dict()
    ckpt.meta["gate_decisions"] = [asdict(d) for d in decisions]
    ckpt.meta["operating_points"] = {o: p.to_dict() for o, p in points.items()}
    # 5. the claim policy (validation): which states may be written, from measured precision
    strata = {"view": np.array([_view_of(records[i]) for i in val_idx])}
    ckpt.meta["gate"] = with_claim_policy(gate, val_probs, val_labels, strata, criteria).to_dict()
    log.info("assessed observations: %s", ckpt.meta["gate"]["assessed"])
    return ckpt


def _calibrate(ckpt: Checkpoint, val_logits: np.ndarray, val_labels: np.ndarray, supported: np.ndarray) -> np.ndarray:
    """Fits the Platt calibrator into `ckpt` (and its record into the meta); the calibrated validation probabilities."""
    scale, bias, fitted = fit_platt(val_logits, np.where(supported[None, :], val_labels, np.nan))
    calibrator = PlattCalibrator(len(OBSERVATIONS))
    calibrator.scale.copy_(torch.from_numpy(scale))
    calibrator.bias.copy_(torch.from_numpy(bias))
    ckpt.calibrator = calibrator
    raw_probs = np.where(supported[None, :], sigmoid(val_logits), 0.5)
    val_probs = calibrated(ckpt, val_logits)
    ckpt.meta["calibration"] = {
        "method": "Platt (per-observation scale and bias on the logit), fitted on the validation split",
        "per_observation": {o.value: {"scale": float(scale[k]), "bias": float(bias[k]), "fitted": fitted[k]} for k, o in enumerate(OBSERVATIONS)},
        "val_ece_before": _ece_table(raw_probs, val_labels),
        "val_ece_after": _ece_table(val_probs, val_labels),
    }
    return val_probs


def _fit_ood(ckpt: Checkpoint, cfg: TrainConfig, feature_fn: FeatureFn, train_idx: list[int], val_feats: torch.Tensor) -> float:
    """Fits the OOD detector into `ckpt` on the training films; its threshold from the validation films."""
    train_pooled = np.concatenate([pool(feature_fn(train_idx[s : s + 256])) for s in range(0, len(train_idx), 256)])
    ckpt.ood = fit_feature_distance(train_pooled)
    val_scores = score(ckpt.ood, pool(val_feats))
    ood_threshold = choose_threshold(val_scores, cfg.ood_false_flag_rate)
    ckpt.meta["ood"] = {
        "method": "PCA-Mahalanobis + residual distance of pooled encoder features from the training films",
        "components": int(ckpt.ood.basis.shape[1]), "threshold": ood_threshold, "target_false_flag_rate": cfg.ood_false_flag_rate,
        "val_flagged": float((val_scores > ood_threshold).mean()),
    }
    return ood_threshold


def _view_of(record: Record) -> str:
    return record.view


def with_claim_policy(
    gate: ServedGate, val_probs: np.ndarray, val_labels: np.ndarray, strata: dict[str, np.ndarray], criteria: GateCriteria | None = None,
    policy_criteria: PolicyCriteria | None = None,
) -> ServedGate:
    """The gate narrowed by the strata checks (an observation whose AUC falls below the floor
    within a view, where measurable, is dropped: the score tells views apart, not the finding)
    and by the claim policy; its operating points become the policy's thresholds."""
    from radalign.concepts.calibration import OperatingPoint
    from radalign.concepts.policy import fit_claim_policy

    criteria = criteria or GateCriteria()
    failing = strata_failures(val_probs, val_labels, strata, gate.assessed, criteria)
    policy = fit_claim_policy(val_probs, val_labels, [o for o in gate.assessed if o not in failing], policy_criteria)
    assessed = [o for o in gate.assessed if o in policy.observations]
    points = {o: OperatingPoint(absent=p.absent, present=p.present, target_sensitivity=0.0, target_specificity=0.0) for o, p in policy.observations.items()}
    for obs, reasons in failing.items():
        log.info("%s not assessed: %s", obs, "; ".join(reasons))
    return ServedGate(assessed=assessed, operating_points=points, ood_threshold=gate.ood_threshold, name=gate.name, policy=policy,
                      recalibration=gate.recalibration, model_version=gate.model_version)
