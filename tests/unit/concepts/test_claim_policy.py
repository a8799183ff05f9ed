"""The claim policy: a band is allowed only where the Wilson lower bound of its precision (NPV for
"no X") clears the bar; thresholds and figures come from the validation films alone."""

import numpy as np
import pytest

from radalign.concepts.policy import (
    PolicyCriteria,
    choose_rule_out,
    evaluate_policy,
    fit_claim_policy,
    fit_observation_policy,
    wilson_lower_bound,
)
from radalign.concepts.vocabulary import OBSERVATIONS
from schemas.events import Certainty, Observation

CRITERIA = PolicyCriteria()


def test_wilson_bound_is_below_the_point_estimate_and_grows_with_films():
    assert wilson_lower_bound(8, 10) < 0.8 < wilson_lower_bound(80, 100) + 0.1
    assert wilson_lower_bound(8, 10) < wilson_lower_bound(80, 100) < 0.8
    assert wilson_lower_bound(0, 0) is None


def test_a_perfectly_separating_score_earns_every_band_with_enough_films():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0.0, 0.2, 200), rng.uniform(0.8, 1.0, 100)])
    y = np.concatenate([np.zeros(200), np.ones(100)])
    rule = fit_observation_policy(p, y, CRITERIA)
    assert rule.allow_present and rule.allow_absent
    assert rule.present_precision.lower_bound >= 0.8 and rule.npv.lower_bound >= 0.95
    assert rule.state(0.9) is Certainty.PRESENT and rule.state(0.05) is Certainty.ABSENT


def test_a_point_estimate_on_a_handful_of_films_is_not_enough():
    # 4 of 4 right in the top band: 100 % precision, but the bound of 4 films is below 0.8
    p = np.array([0.9, 0.91, 0.92, 0.93] + [0.5] * 40)
    y = np.array([1, 1, 1, 1] + [0, 1] * 20)
    rule = fit_observation_policy(p, y, CRITERIA)
    assert not rule.allow_present


def test_a_chance_score_earns_nothing():
    rng = np.random.default_rng(1)
    p, y = rng.uniform(size=400), rng.integers(0, 2, 400)
    rule = fit_observation_policy(p, y, CRITERIA)
    assert not rule.allowed


def test_rule_out_point_keeps_98_percent_of_abnormal_films_out():
    rng = np.random.default_rng(2)
    normal, abnormal = rng.beta(5, 2, 300), rng.beta(2, 5, 300)
    p = np.concatenate([normal, abnormal])
    is_normal = np.concatenate([np.ones(300), np.zeros(300)])
    t = choose_rule_out(p, is_normal, CRITERIA)
    assert (abnormal >= t).mean() <= 0.02 and (normal >= t).any()
    rule = fit_observation_policy(p, is_normal, CRITERIA, rule_out=True)
    assert rule.present == pytest.approx(t) and not rule.allow_hedge  # "possibly normal" is never written


def test_policy_keeps_only_observations_with_an_allowed_state_and_measures_them_on_other_films():
    rng = np.random.default_rng(3)
    n = 400
    labels = np.full((n, len(OBSERVATIONS)), np.nan)
    k_eff, k_pna = OBSERVATIONS.index(Observation.PLEURAL_EFFUSION), OBSERVATIONS.index(Observation.PNEUMONIA)
    labels[:, k_eff] = rng.integers(0, 2, n)
    labels[:, k_pna] = rng.integers(0, 2, n)
    probs = np.full((n, len(OBSERVATIONS)), 0.5)
    probs[:, k_eff] = np.where(labels[:, k_eff] == 1, rng.uniform(0.7, 1.0, n), rng.uniform(0.0, 0.3, n))
    probs[:, k_pna] = rng.uniform(size=n)  # chance
    policy = fit_claim_policy(probs, labels, [Observation.PLEURAL_EFFUSION.value, Observation.PNEUMONIA.value])
    assert list(policy.observations) == [Observation.PLEURAL_EFFUSION.value]
    held_out = evaluate_policy(policy, probs, labels)
    assert held_out[Observation.PLEURAL_EFFUSION.value]["present_precision"]["correct"] > 0
    again = type(policy).from_dict(policy.to_dict())
    assert again.to_dict() == policy.to_dict()


def test_served_gate_with_a_policy_claims_only_allowed_states():
    from radalign.concepts.calibration import OperatingPoint
    from radalign.concepts.gate import ServedGate
    from radalign.concepts.inference import gated_scores
    from radalign.concepts.policy import BandFigure, ClaimPolicy, ObservationPolicy

    figure = BandFigure(50, 45, 0.82)
    only_present = ObservationPolicy(absent=0.2, present=0.7, allow_present=True, allow_hedge=False, allow_absent=False,
                                     present_precision=figure, hedge_precision=figure, npv=figure)
    policy = ClaimPolicy({Observation.PNEUMONIA.value: only_present})
    point = OperatingPoint(absent=0.2, present=0.7, target_sensitivity=0.0, target_specificity=0.0)
    gate = ServedGate(assessed=[Observation.PNEUMONIA.value], operating_points={Observation.PNEUMONIA.value: point}, ood_threshold=None, policy=policy)
    k = OBSERVATIONS.index(Observation.PNEUMONIA)
    for p, claimed in ((0.9, True), (0.5, False), (0.1, False)):
        probs = np.full(len(OBSERVATIONS), 0.5)
        probs[k] = p
        concepts, not_assessed, _ = gated_scores(probs, gate)
        assert (len(concepts) == 1) is claimed and (Observation.PNEUMONIA in not_assessed) is not claimed
        if claimed:
            assert concepts[0].state is Certainty.PRESENT and concepts[0].present_threshold == 0.7
            assert (concepts[0].claim_precision, concepts[0].claim_films) == (0.82, 50)  # the measured figure travels with the claim
    assert ServedGate.from_dict(gate.to_dict()).policy.to_dict() == policy.to_dict()


def test_a_childs_film_gets_no_claim_from_a_model_validated_on_adults_only():
    from radalign.concepts.calibration import OperatingPoint
    from radalign.concepts.gate import ServedGate
    from radalign.concepts.inference import gated_scores

    point = OperatingPoint(absent=0.2, present=0.7, target_sensitivity=0.0, target_specificity=0.0)
    adults = ServedGate(assessed=["Pneumonia"], operating_points={"Pneumonia": point}, ood_threshold=None, validated_on_children=False)
    probs = np.full(len(OBSERVATIONS), 0.9)
    concepts, not_assessed, ood = gated_scores(probs, adults, child=True)
    assert concepts == [] and len(not_assessed) == 14 and ood is not None and ood.reason == "far_from_training_data"
    assert gated_scores(probs, adults, child=False)[2] is None  # an adult's film is scored
    both = ServedGate.from_dict({**adults.to_dict(), "validated_on_children": True})
    assert gated_scores(probs, both, child=True)[2] is None
    assert ServedGate.from_dict(adults.to_dict()).validated_on_children is False
