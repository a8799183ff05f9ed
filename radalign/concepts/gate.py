"""The validity gate: which observations the model has earned the right to assess, decided on
held-out figures (validation split, leave-one-source-out runs, within-group confounding checks;
never the test split), and the `ServedGate` that travels in the checkpoint, the Triton config and
site profiles.

An observation is **assessed** only if
- its validation AUC is >= `min_auc` with >= `min_positives` positives and negatives, and
- it does not collapse under leave-one-source-out (a model trained without a source scores that
  source's non-test films with AUC >= `loso_floor`), wherever that is measurable, and
- where its positives occur only inside another finding's group (NIH: every effusion is a
  pneumonia film), its AUC *within* that group on validation is >= `within_group_floor`
  (otherwise the score only recognises the group). Not measurable (too few within-group labels)
  counts as failing: the gate is conservative.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from radalign.concepts.calibration import OperatingPoint
from radalign.concepts.policy import ClaimPolicy
from radalign.concepts.vocabulary import OBSERVATIONS
from schemas.events import SITE_RE, Observation

#: The group finding of the confounding check: in nih-cxr800 every other finding is a pneumonia film.
CONFOUNDER = Observation.PNEUMONIA
#: Observations that define the group (or are implied by it): no within-group check applies.
GROUP_DEFINING = {Observation.NO_FINDING, Observation.LUNG_OPACITY, Observation.PNEUMONIA}


@dataclass(frozen=True)
class GateCriteria:
    min_auc: float = 0.75
    min_positives: int = 10
    loso_floor: float = 0.60
    within_group_floor: float = 0.60
    within_group_min_class: int = 5

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GateDecision:
    observation: str
    assessed: bool
    val_auc: float | None
    val_positives: int
    val_negatives: int
    loso: dict[str, float | None] = field(default_factory=dict)  # held-out source -> AUC (None: not measurable)
    within_group_auc: float | None = None
    reasons: list[str] = field(default_factory=list)  # why not assessed (empty when assessed)


def auc_or_none(scores: np.ndarray, labels: np.ndarray, min_class: int = 1) -> float | None:
    keep = (labels == 0) | (labels == 1)
    y = labels[keep]
    pos = int(y.sum())
    if pos < min_class or len(y) - pos < min_class:
        return None
    return float(roc_auc_score(y, scores[keep]))


def within_group_auc(scores: np.ndarray, labels: np.ndarray, group: np.ndarray, min_class: int) -> float | None:
    """AUC of one observation among the rows where the group finding is present."""
    return auc_or_none(scores[group == 1], labels[group == 1], min_class)


def decide_gate(
    val_probs: np.ndarray,
    val_labels: np.ndarray,
    *,
    loso: Mapping[str, Mapping[str, float | None]] | None = None,
    criteria: GateCriteria | None = None,
    supported: Sequence[bool] | None = None,
) -> list[GateDecision]:
    """One decision per observation (CheXpert order). `loso` maps held-out source -> observation
    value -> AUC on that source's non-test films (None or absent: not measurable there)."""
    loso = loso or {}
    criteria = criteria or GateCriteria()
    group = val_labels[:, OBSERVATIONS.index(CONFOUNDER)]
    decisions = []
    for k, obs in enumerate(OBSERVATIONS):
        y = val_labels[:, k]
        pos, neg = int((y == 1).sum()), int((y == 0).sum())
        auc = auc_or_none(val_probs[:, k], y)
        reasons = []
        if supported is not None and not supported[k]:
            reasons.append("no training source labels it")
        if min(pos, neg) < criteria.min_positives:
            reasons.append(f"too few validation labels ({pos} positive, {neg} negative; need {criteria.min_positives} of each)")
        elif auc is None or auc < criteria.min_auc:
            reasons.append(f"validation AUC {auc:.3f} < {criteria.min_auc}" if auc is not None else "no validation AUC")
        per_source = {source: figures.get(obs.value) for source, figures in loso.items()}
        for source, value in per_source.items():
            if value is not None and value < criteria.loso_floor:
                reasons.append(f"collapses without {source}: AUC {value:.3f} on {source} < {criteria.loso_floor}")
        wg = None
        if obs not in GROUP_DEFINING:
            wg = within_group_auc(val_probs[:, k], y, group, criteria.within_group_min_class)
            if wg is None:
                reasons.append(f"within-{CONFOUNDER.value} check not measurable (fewer than {criteria.within_group_min_class} of a class)")
            elif wg < criteria.within_group_floor:
                reasons.append(f"within-{CONFOUNDER.value} AUC {wg:.3f} < {criteria.within_group_floor}: scores the group, not the finding")
        decisions.append(GateDecision(obs.value, not reasons, auc, pos, neg, dict(per_source), wg, reasons))
    return decisions


def strata_failures(probs: np.ndarray, labels: np.ndarray, strata: dict[str, np.ndarray], assessed: list[str], criteria: GateCriteria) -> dict[str, list[str]]:
    """Per assessed observation, the strata (view AP, age band older, ...) where its AUC is
    measurable and below the within-group floor."""
    out: dict[str, list[str]] = {}
    for k, obs in enumerate(OBSERVATIONS):
        if obs.value not in assessed:
            continue
        for column, values in strata.items():
            for value in sorted(set(values) - {""}):
                rows = values == value
                auc = auc_or_none(probs[rows, k], labels[rows, k], criteria.within_group_min_class)
                if auc is not None and auc < criteria.within_group_floor:
                    out.setdefault(obs.value, []).append(f"within {column}={value}: AUC {auc:.3f} < {criteria.within_group_floor}")
    return out


@dataclass
class ServedGate:
    """What the concept stage applies to the served model's calibrated probabilities."""

    assessed: list[str]
    operating_points: dict[str, OperatingPoint]  # assessed observations only
    ood_threshold: float | None
    name: str = "shipped"  # "shipped" or a site profile's site name
    recalibration: dict[str, tuple[float, float]] = field(default_factory=dict)  # site profiles: obs -> (scale, bias) on the served logit
    model_version: str | None = None  # site profiles: the served model they were audited against
    #: The claim policy (radalign.concepts.policy): where set, its thresholds replace the operating
    #: points and a state it does not allow makes the observation not assessed for that film.
    policy: ClaimPolicy | None = None
    #: False when the model's validation films held no child (a site model trained on adults):
    #: a film whose header says the patient is a child then gets no claim.
    validated_on_children: bool = True

    def to_dict(self) -> dict:
        return {"name": self.name, "assessed": self.assessed, "ood_threshold": self.ood_threshold,
                "operating_points": {k: v.to_dict() for k, v in self.operating_points.items()},
                "recalibration": {k: list(v) for k, v in self.recalibration.items()}, "model_version": self.model_version,
                "policy": None if self.policy is None else self.policy.to_dict(), "validated_on_children": self.validated_on_children}  # fmt: skip

    @classmethod
    def from_dict(cls, raw: Mapping) -> ServedGate:
        return cls(
            assessed=list(raw["assessed"]), ood_threshold=raw.get("ood_threshold"), name=raw.get("name", "shipped"),
            operating_points={k: OperatingPoint(**v) for k, v in raw.get("operating_points", {}).items()},
            recalibration={k: (float(v[0]), float(v[1])) for k, v in raw.get("recalibration", {}).items()},
            model_version=raw.get("model_version"),
            policy=ClaimPolicy.from_dict(raw["policy"]) if raw.get("policy") else None,
            validated_on_children=bool(raw.get("validated_on_children", True)),
        )  # fmt: skip

    def triton_parameters(self) -> dict[str, str]:
        """Config parameters (strings) of the Triton model: read back by `from_triton_parameters`."""
        return {"assessed_observations": "|".join(self.assessed), "concept_gate": json.dumps(self.to_dict(), separators=(",", ":"))}

    @classmethod
    def from_triton_parameters(cls, params: Mapping[str, str]) -> ServedGate | None:
        raw = params.get("concept_gate")
        return cls.from_dict(json.loads(raw)) if raw else None


@dataclass(frozen=True)
class SiteHeadInfo:
    """Which site model scored a film (Triton's `head` output): its site, version and gate."""

    site: str
    version: str
    gate: ServedGate


def save_profile(gate: ServedGate, path: str | Path, extra: Mapping | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"gate": gate.to_dict(), **(extra or {})}, indent=2))
    return path


def load_profile(path: str | Path) -> ServedGate:
    return ServedGate.from_dict(json.loads(Path(path).read_text())["gate"])


def profile_path(profiles_dir: str | Path, site: str) -> Path:
    """`<dir>/<site>.json`; the site name is restricted so it can never leave the folder."""
    if not SITE_RE.fullmatch(site):
        raise ValueError(f"invalid site name {site!r}: letters, digits, '.', '_', '-' only")
    return Path(profiles_dir) / f"{site}.json"
