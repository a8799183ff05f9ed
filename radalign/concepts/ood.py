"""Out-of-distribution score: how far an image's pooled encoder features lie from the training
films'.

Score = (Mahalanobis distance^2 in the top-k principal subspace) / k + (squared residual outside
that subspace) / (its mean on the training films). Both terms are ~1 for a typical training film;
the residual term catches images whose features leave the subspace altogether (photographs,
noise, other body parts), which a subspace-only Mahalanobis distance would miss. Fitted on the
training split; the abstention threshold is a quantile of the *validation* films' scores, so the
share of in-distribution films wrongly flagged is a stated target, measured on the test split.
Hand-written (a few lines of linear algebra) so that it exports inside the TorchScript model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class FeatureDistance(nn.Module):
    """(B, C) pooled features -> (B,) distance score. Unfitted (k = 0 components): always 0."""

    mean: torch.Tensor
    basis: torch.Tensor
    inv_var: torch.Tensor
    residual_scale: torch.Tensor

    def __init__(self, channels: int, components: int = 32) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("basis", torch.zeros(channels, components))
        self.register_buffer("inv_var", torch.zeros(components))
        self.register_buffer("residual_scale", torch.zeros(()))  # 1 / mean squared residual; 0 = unfitted
        self.components = max(components, 1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        centred = pooled - self.mean
        coords = centred @ self.basis
        mahalanobis = (coords.pow(2) * self.inv_var).sum(dim=1) / self.components
        residual = (centred - coords @ self.basis.T).pow(2).sum(dim=1)
        return mahalanobis + residual * self.residual_scale


def pool(features: np.ndarray | torch.Tensor) -> np.ndarray:
    """(N, C, h, w) encoder features -> (N, C) float64 spatial means (what the served model pools)."""
    arr = features.float().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, dtype=np.float32)
    return arr.mean(axis=(2, 3)).astype(np.float64)


def fit_feature_distance(pooled: np.ndarray, components: int = 32) -> FeatureDistance:
    """PCA of the training films' pooled features (numpy SVD)."""
    n, c = pooled.shape
    k = int(min(components, n - 1, c))
    mean = pooled.mean(axis=0)
    centred = pooled - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    basis = vt[:k].T  # (C, k)
    var = (singular[:k] ** 2) / max(n - 1, 1)
    residual = centred - (centred @ basis) @ basis.T
    mean_residual = float((residual**2).sum(axis=1).mean())
    module = FeatureDistance(c, k)
    module.mean.copy_(torch.from_numpy(mean).float())
    module.basis.copy_(torch.from_numpy(basis).float())
    module.inv_var.copy_(torch.from_numpy(1.0 / np.maximum(var, 1e-8)).float())
    module.residual_scale.fill_(1.0 / max(mean_residual, 1e-8))
    return module.eval()


def score(module: FeatureDistance, pooled: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(np.asarray(pooled, dtype=np.float32))).numpy().astype(np.float64)


def choose_threshold(val_scores: np.ndarray, false_flag_rate: float = 0.01) -> float:
    """The (1 - rate) quantile of in-distribution validation scores."""
    if len(val_scores) == 0:
        raise ValueError("no validation scores to choose an OOD threshold from")
    return float(np.quantile(val_scores, 1.0 - false_flag_rate))
