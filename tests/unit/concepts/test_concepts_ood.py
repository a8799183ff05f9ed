"""The OOD feature distance: ~1 on training-like features, large off the training subspace."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radalign.concepts.ood import FeatureDistance, choose_threshold, fit_feature_distance, pool, score

MIXING = np.random.default_rng(100).normal(size=(8, 64))  # training features live near an 8-d subspace


def _train(n: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8)) @ MIXING + 0.05 * rng.normal(size=(n, MIXING.shape[1])) + 3.0


def test_training_like_features_score_about_one_and_others_far_higher() -> None:
    train = _train()
    module = fit_feature_distance(train, components=8)
    in_scores = score(module, _train(200, seed=1))  # fresh draws of the training distribution
    assert np.median(in_scores) == pytest.approx(2.0, abs=0.5)  # ~1 from each term
    off_subspace = train.mean(0) + np.random.default_rng(3).normal(size=(20, train.shape[1]))  # isotropic: leaves the subspace
    far_along = train.mean(0) + 20 * train.std(0)  # extreme along the training directions
    assert score(module, off_subspace).min() > np.quantile(in_scores, 0.99) * 5
    assert score(module, far_along[None])[0] > np.quantile(in_scores, 0.99)


def test_threshold_is_the_validation_quantile_and_unfitted_scores_zero() -> None:
    val = np.arange(1, 101, dtype=float)
    assert choose_threshold(val, 0.05) == pytest.approx(np.quantile(val, 0.95))
    with pytest.raises(ValueError):
        choose_threshold(np.array([]), 0.01)
    assert torch.equal(FeatureDistance(16, 0)(torch.rand(3, 16)), torch.zeros(3))


def test_pool_is_the_spatial_mean() -> None:
    feats = np.arange(2 * 3 * 2 * 2, dtype=np.float16).reshape(2, 3, 2, 2)
    np.testing.assert_allclose(pool(feats), feats.astype(np.float64).mean(axis=(2, 3)))
