"""Calibration as served: per-observation Platt scaling (a temperature and a bias on the model's
logit) and operating points (present / absent thresholds). Fitting both on validation data, the
expected calibration error and reliability curves are training (`radalign.concepts_training.calibration`).

Platt rather than isotonic: two parameters per observation fit the ~10-60 validation positives
of the rarer findings without the steps isotonic regression learns from so few points, and it is
a smooth map that exports to TorchScript as two buffers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn


class PlattCalibrator(nn.Module):
    """Calibrated logit = scale * logit + bias, per observation (identity by default)."""

    scale: torch.Tensor
    bias: torch.Tensor

    def __init__(self, num_concepts: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(num_concepts))
        self.register_buffer("bias", torch.zeros(num_concepts))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits * self.scale + self.bias


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    p = np.clip(p, eps, 1 - eps)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class OperatingPoint:
    """Calibrated-probability thresholds of one observation: absent below `absent`, present at or
    above `present`, uncertain between. Chosen on validation data for the stated targets."""

    absent: float
    present: float
    target_sensitivity: float
    target_specificity: float
    val_sensitivity: float | None = None  # share of validation positives not called absent
    val_specificity: float | None = None  # share of validation negatives not called present

    def to_dict(self) -> dict:
        return asdict(self)
