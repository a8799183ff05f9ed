"""The claim policy: which states the drafter may write for an observation, chosen on validation
patients from measured precision, never from a point estimate on a handful of positives.

For each observation the validation films' calibrated probabilities give three bands:
- **present** (p >= `present`): a stated finding, allowed only where the Wilson 95 % lower bound
  of its precision (share of the band that is truly positive) is >= `min_present_precision` (0.8)
  and at most `max_negative_claim_rate` (10 %) of the films without the finding reach it;
- **hedge** (between the thresholds): "possible X", allowed only where the lower bound of the
  band's precision is >= `min_hedge_precision` (0.5) and at most `max_negative_claim_rate` (10 %)
  of the films without the finding get a claim of it (stated or hedged);
- **absent** (p < `absent`): "no X", allowed only where the lower bound of the negative
  predictive value is >= `min_npv` (0.95).
The thresholds are chosen on the same validation films: the lowest `present` whose band still
meets its bound (most stated findings at the required precision), the highest `absent` whose band
still meets its NPV bound. A film whose state falls in a band that is not allowed gets no claim
for that observation: it is listed as not assessed. For No Finding the `present` band is the
likely-normal call, and its threshold is the site's **rule-out point**: the lowest threshold at
which at most `rule_out_miss` (2 %) of the validation's abnormal films score at or above it.

Figures are measured on the validation split the thresholds were chosen on, so they are what the
selection saw; the model card gives the same figures on held-out test patients beside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from schemas.events import Certainty, Observation

#: A band with fewer validation films than this is never allowed (no bound means anything).
MIN_BAND_FILMS = 5


@dataclass(frozen=True)
class PolicyCriteria:
    min_present_precision: float = 0.8
    min_hedge_precision: float = 0.5
    min_npv: float = 0.95
    rule_out_miss: float = 0.02
    #: At most this share of the validation films without the finding may get any claim of it
    #: (stated or hedged): a hedge right half the time still must not reach most normal films.
    max_negative_claim_rate: float = 0.1
    confidence: float = 0.95

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BandFigure:
    """How often one band's claim was right on the films it was measured on."""

    films: int
    correct: int
    lower_bound: float | None  # Wilson lower bound of correct / films; None without films

    @property
    def rate(self) -> float | None:
        return self.correct / self.films if self.films else None


def wilson_lower_bound(correct: int, films: int, confidence: float = 0.95) -> float | None:
    """Lower end of the Wilson score interval (scipy), None for an empty band."""
    if films <= 0:
        return None
    from scipy.stats import binomtest

    return float(binomtest(int(correct), int(films)).proportion_ci(confidence, method="wilson").low)


def band_figure(correct_mask: np.ndarray, confidence: float = 0.95) -> BandFigure:
    films, correct = int(correct_mask.size), int(correct_mask.sum())
    return BandFigure(films, correct, wilson_lower_bound(correct, films, confidence))


@dataclass(frozen=True)
class ObservationPolicy:
    """The thresholds and the allowed states of one observation, with the figures behind them."""

    absent: float  # below: the absent band
    present: float  # at or above: the present band (1.0 + : no film reaches it)
    allow_present: bool
    allow_hedge: bool
    allow_absent: bool
    present_precision: BandFigure
    hedge_precision: BandFigure
    npv: BandFigure

    @property
    def allowed(self) -> frozenset[Certainty]:
        out = set()
        if self.allow_present:
            out.add(Certainty.PRESENT)
        if self.allow_hedge:
            out.add(Certainty.UNCERTAIN)
        if self.allow_absent:
            out.add(Certainty.ABSENT)
        return frozenset(out)

    def state(self, probability: float) -> Certainty:
        if probability >= self.present:
            return Certainty.PRESENT
        if probability < self.absent:
            return Certainty.ABSENT
        return Certainty.UNCERTAIN

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping) -> ObservationPolicy:
        figures = {k: BandFigure(**raw[k]) for k in ("present_precision", "hedge_precision", "npv")}
        return cls(absent=float(raw["absent"]), present=float(raw["present"]), allow_present=bool(raw["allow_present"]),
                   allow_hedge=bool(raw["allow_hedge"]), allow_absent=bool(raw["allow_absent"]), **figures)  # fmt: skip


@dataclass
class ClaimPolicy:
    """Per observation (value -> policy) for the observations the validity gate let through."""

    observations: dict[str, ObservationPolicy] = field(default_factory=dict)
    criteria: PolicyCriteria = field(default_factory=PolicyCriteria)

    def to_dict(self) -> dict:
        return {"criteria": self.criteria.to_dict(), "observations": {k: v.to_dict() for k, v in self.observations.items()}}

    @classmethod
    def from_dict(cls, raw: Mapping) -> ClaimPolicy:
        return cls({k: ObservationPolicy.from_dict(v) for k, v in raw.get("observations", {}).items()}, PolicyCriteria(**raw.get("criteria", {})))

    def rule_out(self) -> float | None:
        """The No Finding likely-normal threshold, when No Finding may be stated."""
        nf = self.observations.get(Observation.NO_FINDING.value)
        return nf.present if nf is not None and nf.allow_present else None


def _candidates(p: np.ndarray) -> np.ndarray:
    return np.unique(p.astype(np.float32)).astype(np.float64)


def choose_present(p: np.ndarray, y: np.ndarray, criteria: PolicyCriteria) -> float:
    """The lowest threshold whose band (p >= t) has a precision lower bound >= the criterion;
    just above the highest score when none does (no film is ever called present)."""
    negatives = p[y == 0]
    for t in _candidates(p):  # ascending: the first that holds keeps the most films
        band = p >= t
        if negatives.size and (negatives >= t).mean() > criteria.max_negative_claim_rate:
            continue  # precise enough on this mix, yet too many films without the finding would read "X"
        if band.sum() >= MIN_BAND_FILMS and (lb := wilson_lower_bound(int(y[band].sum()), int(band.sum()), criteria.confidence)) is not None \
                and lb >= criteria.min_present_precision:  # fmt: skip
            return float(t)
    return float(np.nextafter(np.float32(p.max() if p.size else 1.0), np.float32(np.inf)))


def choose_absent(p: np.ndarray, y: np.ndarray, criteria: PolicyCriteria) -> float:
    """The highest threshold whose band (p < t) has an NPV lower bound >= the criterion; 0 when none."""
    for t in _candidates(p)[::-1]:  # descending: the first that holds keeps the most films
        band = p < t
        if band.sum() >= MIN_BAND_FILMS and (lb := wilson_lower_bound(int((y[band] == 0).sum()), int(band.sum()), criteria.confidence)) is not None \
                and lb >= criteria.min_npv:  # fmt: skip
            return float(t)
    return 0.0


def choose_hedge_floor(p: np.ndarray, y: np.ndarray, present: float, criteria: PolicyCriteria) -> float:
    """The lowest threshold t whose hedge band (t <= p < present) has a precision lower bound >=
    the hedge criterion; `present` (an empty band) when none does."""
    negatives = p[y == 0]
    for t in _candidates(p[p < present]):  # ascending: the first that holds keeps the most films
        band = (p >= t) & (p < present)
        if negatives.size and (negatives >= t).mean() > criteria.max_negative_claim_rate:
            continue  # too many films without the finding would read "possible X"
        if band.sum() >= MIN_BAND_FILMS and (lb := wilson_lower_bound(int(y[band].sum()), int(band.sum()), criteria.confidence)) is not None \
                and lb >= criteria.min_hedge_precision:  # fmt: skip
            return float(t)
    return present


def choose_rule_out(p_normal: np.ndarray, is_normal: np.ndarray, criteria: PolicyCriteria) -> float:
    """The lowest No Finding threshold at which at most `rule_out_miss` of the abnormal films
    score at or above it (>= 98 % of abnormal films are not called likely-normal)."""
    abnormal = np.sort(p_normal[is_normal == 0])
    if abnormal.size == 0:
        return float(np.nextafter(np.float32(1.0), np.float32(np.inf)))
    allowed_misses = int(np.floor(criteria.rule_out_miss * abnormal.size))
    # the (n - allowed)th abnormal score, one float32 step up: exactly `allowed` abnormal films at or above
    return float(np.nextafter(np.float32(abnormal[abnormal.size - allowed_misses - 1]), np.float32(np.inf)))


def figures_at(p: np.ndarray, y: np.ndarray, absent: float, present: float, confidence: float = 0.95) -> tuple[BandFigure, BandFigure, BandFigure]:
    """(present precision, hedge precision, NPV) of the bands at these thresholds."""
    present_band, absent_band = p >= present, p < absent
    hedge_band = ~present_band & ~absent_band
    return (band_figure(y[present_band] == 1, confidence), band_figure(y[hedge_band] == 1, confidence), band_figure(y[absent_band] == 0, confidence))


def fit_observation_policy(p: np.ndarray, y: np.ndarray, criteria: PolicyCriteria, *, rule_out: bool = False) -> ObservationPolicy:
    """The policy of one observation from validation probabilities and certain labels (1 / 0)."""
    keep = (y == 0) | (y == 1)
    p, y = np.asarray(p, dtype=np.float64)[keep], np.asarray(y)[keep]
    present = choose_rule_out(p, y, criteria) if rule_out else choose_present(p, y, criteria)
    absent = min(choose_absent(p, y, criteria), present)
    pp, hp, npv = figures_at(p, y, absent, present, criteria.confidence)
    if npv.lower_bound is None or npv.lower_bound < criteria.min_npv:
        # "no X" is not earned: the absent band is unclaimed anyway, so narrow the hedge band from
        # below to where "possible X" is right often enough (its films below get no claim)
        absent = choose_hedge_floor(p, y, present, criteria)
        pp, hp, npv = figures_at(p, y, absent, present, criteria.confidence)

    def ok(figure: BandFigure, bound: float) -> bool:
        return figure.films >= MIN_BAND_FILMS and figure.lower_bound is not None and figure.lower_bound >= bound

    # No Finding is a rule-out call or nothing: "possibly normal" helps no radiologist
    return ObservationPolicy(
        absent=absent, present=present, allow_present=ok(pp, criteria.min_present_precision),
        allow_hedge=not rule_out and ok(hp, criteria.min_hedge_precision),
        allow_absent=ok(npv, criteria.min_npv), present_precision=pp, hedge_precision=hp, npv=npv,
    )


def fit_claim_policy(
    val_probs: np.ndarray, val_labels: np.ndarray, assessed: list[str], criteria: PolicyCriteria | None = None
) -> ClaimPolicy:
    """Policies of the gate's assessed observations (CheXpert-ordered columns); an observation
    that ends with no allowed state is left out (the caller lists it as not assessed)."""
    from radalign.concepts.vocabulary import OBSERVATIONS

    criteria = criteria or PolicyCriteria()
    policy = ClaimPolicy(criteria=criteria)
    for k, obs in enumerate(OBSERVATIONS):
        if obs.value not in assessed:
            continue
        fitted = fit_observation_policy(val_probs[:, k], val_labels[:, k], criteria, rule_out=obs is Observation.NO_FINDING)
        if fitted.allowed:
            policy.observations[obs.value] = fitted
    return policy


def evaluate_policy(policy: ClaimPolicy, probs: np.ndarray, labels: np.ndarray, confidence: float = 0.95) -> dict[str, dict]:
    """Held-out figures of each observation's allowed bands at the policy's thresholds (the model
    card's test columns): per band, films, correct and the Wilson interval's lower bound."""
    from radalign.concepts.vocabulary import OBSERVATIONS

    out = {}
    for k, obs in enumerate(OBSERVATIONS):
        pol = policy.observations.get(obs.value)
        if pol is None:
            continue
        y = labels[:, k]
        keep = (y == 0) | (y == 1)
        pp, hp, npv = figures_at(probs[keep, k].astype(np.float64), y[keep], pol.absent, pol.present, confidence)
        out[obs.value] = {"present_precision": asdict(pp) if pol.allow_present else None,
                          "hedge_precision": asdict(hp) if pol.allow_hedge else None,
                          "npv": asdict(npv) if pol.allow_absent else None}  # fmt: skip
    return out
