"""Validation-fitted calibration, ECE and operating points."""

from __future__ import annotations

import numpy as np
import pytest

from radalign.concepts.calibration import sigmoid
from radalign.concepts_training.calibration import choose_operating_point, expected_calibration_error, fit_platt, reliability_curve


def _miscalibrated(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z); the 'model' reports 4 * z + 2 (over-confident and shifted)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < sigmoid(z)).astype(np.float32)
    return (4 * z + 2)[:, None], y[:, None]


def test_platt_scaling_undoes_an_overconfident_shifted_logit() -> None:
    logits, labels = _miscalibrated()
    scale, bias, fitted = fit_platt(logits, labels)
    assert fitted == [True]
    assert scale[0] == pytest.approx(0.25, abs=0.05) and bias[0] == pytest.approx(-0.5, abs=0.2)
    before = expected_calibration_error(sigmoid(logits[:, 0]), labels[:, 0])
    after = expected_calibration_error(sigmoid(logits[:, 0] * scale[0] + bias[0]), labels[:, 0])
    assert before > 0.08 and after < 0.04


def test_observations_with_too_few_labels_keep_the_identity() -> None:
    logits = np.random.default_rng(0).normal(size=(50, 2))
    labels = np.full((50, 2), np.nan, dtype=np.float32)
    labels[:, 0] = 0
    labels[:3, 0] = 1  # 3 positives only
    scale, bias, fitted = fit_platt(logits, labels)
    assert fitted == [False, False] and scale.tolist() == [1.0, 1.0] and bias.tolist() == [0.0, 0.0]


def test_ece_of_a_known_example_and_unknown_labels_ignored() -> None:
    probs = np.array([0.1, 0.1, 0.9, 0.9, 0.5])
    labels = np.array([0, 0, 1, 0, np.nan])
    # bin 0.1: mean 0.1, freq 0 -> 0.1 * 2/4 ; bin 0.9: mean 0.9, freq 0.5 -> 0.4 * 2/4
    assert expected_calibration_error(probs, labels) == pytest.approx(0.25)
    assert reliability_curve(probs, labels) == [(0.1, 0.0, 2), (0.9, 0.5, 2)]
    assert expected_calibration_error(probs, np.full(5, np.nan)) is None


def test_operating_point_meets_the_stated_sensitivity_and_specificity() -> None:
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(100), np.zeros(300)]
    probs = np.clip(np.r_[rng.normal(0.7, 0.15, 100), rng.normal(0.3, 0.15, 300)], 0, 1)
    point = choose_operating_point(probs, labels, sensitivity=0.9, specificity=0.95)
    assert point is not None and point.absent <= point.present
    assert (probs[labels == 1] >= point.absent).mean() >= 0.9
    assert (probs[labels == 0] < point.present).mean() >= 0.95
    assert point.val_sensitivity >= 0.9 and point.val_specificity >= 0.95
    assert choose_operating_point(probs[labels == 1], labels[labels == 1]) is None  # one class only


def test_the_present_threshold_holds_for_float32_scores() -> None:
    """Served probabilities are float32: the threshold must stay above the chosen negative score
    after the comparison rounds it to float32 (it once rounded back onto it: specificity 123/137)."""
    rng = np.random.default_rng(3)
    probs = rng.random(147).astype(np.float32)
    labels = np.r_[np.zeros(137), np.ones(10)]
    point = choose_operating_point(probs, labels, specificity=0.9)
    assert point is not None
    neg = probs[labels == 0]
    assert (neg < point.present).sum() >= 124 and (neg.astype(np.float64) < point.present).sum() >= 124
