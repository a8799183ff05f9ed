"""The site head: one provider's concept scores from the shared frozen encoder's pooled features.

Small on purpose: a standardised linear map (one logistic regression per observation, L2 strength
chosen on the site's validation patients) with Platt calibration on top, and the site's own OOD
detector (`FeatureDistance` fitted on the site's training films). Measured on nih-cxr800's
validation patients, a linear probe on these features reached No Finding AUC 0.90 against 0.88
for the attention head trained on three collections at once, and it needs a few seconds of CPU.

The head is exported as TorchScript with its gate, claim policy and figures in an extra file, so
Triton's Python backend loads it next to the encoder without the project's code (`load_head`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from radalign.concepts.ood import FeatureDistance
from radalign.concepts.vocabulary import OBSERVATIONS
from radalign.concepts_training.calibration import fit_platt

META_FILE = "site_head.json"
#: L2 strengths tried on the site's validation patients (sklearn's C: smaller = stronger).
C_GRID = (0.001, 0.003, 0.01, 0.03)
#: An observation needs this many training films of each class to get a head at all.
MIN_TRAIN_CLASS = 5


class SiteHead(nn.Module):
    """(B, C) pooled encoder features -> ((B, K) calibrated probabilities, (B,) OOD score).
    Observations without a fitted head answer exactly 0.5 (`supported` is 0 there).

    The OOD score is the larger of two detectors, each divided by its own threshold (so the
    site's abstention threshold is 1.0): the distance from the site's training films
    (`FeatureDistance`), and a membership classifier, the site's films against films from
    elsewhere (outlier exposure: children's films, other collections), which sees the ways a
    film is unlike the site's that the distance alone misses."""

    mean: torch.Tensor
    inv_std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    supported: torch.Tensor
    member_weight: torch.Tensor
    member_bias: torch.Tensor
    distance_scale: torch.Tensor
    member_scale: torch.Tensor

    def __init__(self, channels: int, ood: FeatureDistance, num_concepts: int = len(OBSERVATIONS)) -> None:
        super().__init__()
        for name, shape in (("mean", (channels,)), ("inv_std", (channels,)), ("weight", (num_concepts, channels)), ("bias", (num_concepts,)),
                            ("scale", (num_concepts,)), ("shift", (num_concepts,)), ("supported", (num_concepts,)),
                            ("member_weight", (channels,)), ("member_bias", ()), ("distance_scale", ()), ("member_scale", ())):
            self.register_buffer(name, torch.zeros(shape))
        self.ood = ood

    def standardised(self, pooled: torch.Tensor) -> torch.Tensor:
        return (pooled - self.mean) * self.inv_std

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.standardised(pooled) @ self.weight.T + self.bias

    def detectors(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(distance, P(from elsewhere)) before scaling."""
        return self.ood(pooled), torch.sigmoid(self.standardised(pooled) @ self.member_weight + self.member_bias)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.sigmoid(self.logits(pooled) * self.scale + self.shift)
        probs = torch.where(self.supported > 0, probs, torch.full_like(probs, 0.5))
        distance, elsewhere = self.detectors(pooled)
        return probs, torch.maximum(distance * self.distance_scale, elsewhere * self.member_scale)


@dataclass
class FittedHead:
    head: SiteHead
    l2_c: dict[str, float]  # observation -> chosen C


def fit_site_head(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, ood: FeatureDistance, *, grid: tuple[float, ...] = C_GRID
) -> FittedHead:
    """One balanced logistic regression per observation on standardised features, C chosen by
    validation AUC; then Platt scaling on the validation films (same split, as the generic model)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    channels = train_x.shape[1]
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    ztr, zva = (train_x - mean) / std, (val_x - mean) / std
    k = len(OBSERVATIONS)
    weight, bias, supported = np.zeros((k, channels)), np.zeros(k), np.zeros(k)
    chosen: dict[str, float] = {}
    for j, obs in enumerate(OBSERVATIONS):
        tr, va = np.isin(train_y[:, j], (0, 1)), np.isin(val_y[:, j], (0, 1))
        ytr, yva = train_y[tr, j], val_y[va, j]
        if min(ytr.sum(), len(ytr) - ytr.sum()) < MIN_TRAIN_CLASS:
            continue
        best: tuple[float, Any] | None = None
        for c in grid:
            model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(ztr[tr], ytr)
            score = roc_auc_score(yva, model.decision_function(zva[va])) if 0 < yva.sum() < len(yva) else -c  # no val AUC: the strongest L2
            if best is None or score > best[0]:
                best = (score, model)
        assert best is not None
        weight[j], bias[j], supported[j] = best[1].coef_[0], best[1].intercept_[0], 1.0
        chosen[obs.value] = float(best[1].C)
    head = SiteHead(channels, ood)
    for name, value in (("mean", mean), ("inv_std", 1.0 / std), ("weight", weight), ("bias", bias), ("supported", supported)):
        getattr(head, name).copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)))
    head.scale.fill_(1.0)
    val_logits = raw_logits(head, val_x)
    scale, shift, _ = fit_platt(val_logits, val_y)
    head.scale.copy_(torch.from_numpy(scale))
    head.shift.copy_(torch.from_numpy(shift))
    return FittedHead(head.eval(), chosen)


#: Share of the site's validation films each detector may flag (the two together: about 1 %).
DETECTOR_FALSE_FLAG = 0.005


def fit_abstention(head: SiteHead, train_x: np.ndarray, val_x: np.ndarray, reference_x: np.ndarray | None) -> dict[str, float]:
    """Fit the membership classifier (site training films against `reference_x`, films from
    elsewhere) and scale both detectors so that each flags `DETECTOR_FALSE_FLAG` of the site's
    validation films at score 1.0. Without reference films only the distance decides."""
    from sklearn.linear_model import LogisticRegression

    mean, inv_std = head.mean.numpy(), head.inv_std.numpy()
    if reference_x is not None and len(reference_x) >= MIN_TRAIN_CLASS:
        x = np.concatenate([train_x, reference_x])
        y = np.r_[np.zeros(len(train_x)), np.ones(len(reference_x))]
        model = LogisticRegression(C=0.01, max_iter=3000, class_weight="balanced").fit((x - mean) * inv_std, y)
        head.member_weight.copy_(torch.from_numpy(model.coef_[0].astype(np.float32)))
        head.member_bias.fill_(float(model.intercept_[0]))
    else:
        head.member_bias.fill_(-50.0)  # no films from elsewhere: the classifier never fires
    with torch.inference_mode():
        distance, elsewhere = (t.numpy() for t in head.detectors(torch.from_numpy(np.asarray(val_x, dtype=np.float32))))
    t_distance = float(np.quantile(distance, 1 - DETECTOR_FALSE_FLAG))
    t_elsewhere = float(np.quantile(elsewhere, 1 - DETECTOR_FALSE_FLAG))
    head.distance_scale.fill_(1.0 / max(t_distance, 1e-6))
    head.member_scale.fill_(1.0 / max(t_elsewhere, 1e-6) if reference_x is not None and len(reference_x) >= MIN_TRAIN_CLASS else 0.0)
    return {"distance_threshold": t_distance, "membership_threshold": t_elsewhere}


def raw_logits(head: SiteHead, pooled: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return head.logits(torch.from_numpy(np.asarray(pooled, dtype=np.float32))).numpy()


def predict(head: nn.Module, pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, K), OOD scores (N,)) of a site head (eager or TorchScript)."""
    with torch.inference_mode():
        probs, ood = head(torch.from_numpy(np.asarray(pooled, dtype=np.float32)))
    return probs.numpy().astype(np.float64), ood.numpy().astype(np.float64)


def save_head(head: SiteHead, path: str | Path, meta: dict[str, Any]) -> Path:
    """TorchScript (traced: plain tensor algebra) with `meta` (site, version, gate, policy, figures)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, int(head.mean.shape[0]))
    with torch.inference_mode():
        traced = torch.jit.trace(head.eval(), example, check_trace=False)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.jit.save(traced, str(tmp), _extra_files={META_FILE: json.dumps(meta)})
    tmp.replace(path)
    return path


def load_head(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    extra = {META_FILE: ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module.eval(), json.loads(extra[META_FILE])
