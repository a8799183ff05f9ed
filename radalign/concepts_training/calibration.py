"""Calibration fitted on validation data: Platt scaling, expected calibration error, reliability
curves, and operating points chosen for a stated sensitivity and specificity. What they produce is
served by `radalign.concepts.calibration` (`PlattCalibrator`, `OperatingPoint`).
"""

from __future__ import annotations

import numpy as np

from radalign.concepts.calibration import OperatingPoint

#: Fewer certain validation labels of either class than this: the observation keeps the identity map.
MIN_CLASS_FOR_FIT = 5


def _certain(labels: np.ndarray) -> np.ndarray:
    return (labels == 0) | (labels == 1)


def fit_platt(logits: np.ndarray, labels: np.ndarray, *, regularisation: float = 1.0) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """(scale (K,), bias (K,), fitted per observation) from validation logits and labels
    (1 / 0 certain; -1 / NaN ignored). L2-regularised logistic regression on the single logit
    feature; observations with too few labels of a class keep scale 1, bias 0."""
    from sklearn.linear_model import LogisticRegression

    k = logits.shape[1]
    scale, bias, fitted = np.ones(k, dtype=np.float32), np.zeros(k, dtype=np.float32), []
    for j in range(k):
        keep = _certain(labels[:, j])
        y = labels[keep, j]
        if min(int(y.sum()), int(len(y) - y.sum())) < MIN_CLASS_FOR_FIT:
            fitted.append(False)
            continue
        model = LogisticRegression(C=regularisation).fit(logits[keep, j : j + 1].astype(np.float64), y.astype(int))
        scale[j], bias[j] = float(model.coef_[0, 0]), float(model.intercept_[0])
        fitted.append(True)
    return scale, bias, fitted


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float | None:
    """ECE with equal-width bins over the certain labels of one observation (1-D inputs); None if empty."""
    keep = _certain(labels)
    p, y = probabilities[keep], labels[keep]
    if len(y) == 0:
        return None
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(p[sel].mean() - y[sel].mean())
    return float(ece)


def reliability_curve(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean predicted, observed frequency, count) per non-empty bin."""
    keep = _certain(labels)
    p, y = probabilities[keep], labels[keep]
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    return [(float(p[bins == b].mean()), float(y[bins == b].mean()), int((bins == b).sum())) for b in range(n_bins) if (bins == b).any()]


def choose_operating_point(
    probabilities: np.ndarray, labels: np.ndarray, *, sensitivity: float = 0.9, specificity: float = 0.9
) -> OperatingPoint | None:
    """The highest `absent` threshold that still leaves >= `sensitivity` of positives at or above
    it (few missed findings are called absent), and the lowest `present` threshold that leaves
    >= `specificity` of negatives below it (few normals are called present). Between them the
    state is uncertain. None without both classes."""
    keep = _certain(labels)
    p, y = probabilities[keep], labels[keep]
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    if len(pos) == 0 or len(neg) == 0:
        return None
    # absent threshold: the (1 - sensitivity) quantile of positive scores, taken from below
    n_miss = int(np.floor((1 - sensitivity) * len(pos)))
    absent = float(pos[n_miss])
    # present threshold: one float32 step above the specificity quantile of negative scores (the
    # served probabilities are float32: a float64 step would round back onto that score)
    n_pass = int(np.ceil(specificity * len(neg)))
    present = float(np.nextafter(np.float32(neg[n_pass - 1]), np.float32(1.0))) if n_pass > 0 else 0.0
    present = min(max(present, absent), 1.0)
    return OperatingPoint(
        absent=absent, present=present, target_sensitivity=sensitivity, target_specificity=specificity,
        val_sensitivity=float((pos >= absent).mean()), val_specificity=float((neg < present).mean()),
    )  # fmt: skip
