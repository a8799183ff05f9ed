"""Per-observation ROC AUC with bootstrap confidence intervals (scikit-learn for the AUC itself)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from radalign.concepts.vocabulary import COMPETITION_OBSERVATIONS, OBSERVATIONS
from schemas.events import Observation


def _binary(labels: np.ndarray) -> np.ndarray:
    """Rows with a certain label (1 or 0); uncertain (-1) and unknown (NaN) are left out of the AUC."""
    return (labels == 0) | (labels == 1)


def per_observation_auc(probabilities: np.ndarray, labels: np.ndarray) -> dict[Observation, float | None]:
    """AUC per observation, None where the rows hold only one class."""
    out: dict[Observation, float | None] = {}
    for k, obs in enumerate(OBSERVATIONS):
        keep = _binary(labels[:, k])
        y = labels[keep, k]
        out[obs] = float(roc_auc_score(y, probabilities[keep, k])) if 0 < y.sum() < len(y) else None
    return out


def mean_auc(aucs: dict[Observation, float | None], observations: Sequence[Observation] | None = None) -> float | None:
    values = [v for o in (observations or OBSERVATIONS) if (v := aucs.get(o)) is not None]
    return float(np.mean(values)) if values else None


@dataclass(frozen=True)
class AucRow:
    observation: Observation
    positives: int
    negatives: int
    auc: float | None
    ci_low: float | None
    ci_high: float | None


def bootstrap_aucs(probabilities: np.ndarray, labels: np.ndarray, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> list[AucRow]:
    """Percentile bootstrap over images (resampled with replacement; resamples with one class skipped)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, obs in enumerate(OBSERVATIONS):
        keep = _binary(labels[:, k])
        y, p = labels[keep, k], probabilities[keep, k]
        pos, neg = int(y.sum()), int(len(y) - y.sum())
        if pos == 0 or neg == 0:
            rows.append(AucRow(obs, pos, neg, None, None, None))
            continue
        stats = []
        for _ in range(n_boot):
            idx = rng.integers(0, len(y), len(y))
            if 0 < y[idx].sum() < len(idx):
                stats.append(roc_auc_score(y[idx], p[idx]))
        lo, hi = (np.quantile(stats, [alpha / 2, 1 - alpha / 2]) if stats else (np.nan, np.nan))
        rows.append(AucRow(obs, pos, neg, float(roc_auc_score(y, p)), float(lo), float(hi)))
    return rows


def summarise(rows: Sequence[AucRow]) -> dict[str, float | None]:
    aucs = {r.observation: r.auc for r in rows}
    return {"mean_auc_competition": mean_auc(aucs, COMPETITION_OBSERVATIONS), "mean_auc_present": mean_auc(aucs)}
