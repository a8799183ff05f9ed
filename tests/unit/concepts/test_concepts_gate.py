"""The validity gate: validation AUC with enough labels, no leave-one-source-out collapse, and the
within-group confounding check."""

from __future__ import annotations

import numpy as np
import pytest

from radalign.concepts.gate import GateCriteria, ServedGate, decide_gate, profile_path
from radalign.concepts.vocabulary import OBSERVATIONS
from schemas.events import Observation

K = {o: i for i, o in enumerate(OBSERVATIONS)}


def _val(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pneumonia half the films; effusion only among them; probabilities that separate
    No Finding / Pneumonia well, effusion well *within* the pneumonia group, atelectasis only by group."""
    rng = np.random.default_rng(seed)
    labels = np.full((n, 14), np.nan, dtype=np.float32)
    pneu = np.arange(n) < n // 2
    labels[:, K[Observation.PNEUMONIA]] = pneu
    labels[:, K[Observation.NO_FINDING]] = ~pneu
    eff = pneu & (rng.random(n) < 0.4)
    labels[:, K[Observation.PLEURAL_EFFUSION]] = eff
    atel = pneu & (rng.random(n) < 0.4)
    labels[:, K[Observation.ATELECTASIS]] = atel
    labels[:5, K[Observation.CARDIOMEGALY]] = [1, 0, 0, 0, 0]  # far too few labels
    probs = np.full((n, 14), 0.5)
    noise = rng.normal(0, 0.1, n)
    probs[:, K[Observation.PNEUMONIA]] = 0.3 + 0.4 * pneu + noise
    probs[:, K[Observation.NO_FINDING]] = 0.7 - 0.4 * pneu + noise
    probs[:, K[Observation.PLEURAL_EFFUSION]] = 0.2 + 0.3 * pneu + 0.3 * eff + noise
    probs[:, K[Observation.ATELECTASIS]] = 0.2 + 0.5 * pneu + noise  # knows the group, not the finding
    return probs, labels


def _by_name(decisions):
    return {d.observation: d for d in decisions}


def test_gate_assesses_what_holds_up_and_says_why_not_otherwise() -> None:
    probs, labels = _val()
    d = _by_name(decide_gate(probs, labels))
    assert d["Pneumonia"].assessed and d["No Finding"].assessed and d["Pleural Effusion"].assessed
    assert d["Pleural Effusion"].within_group_auc > 0.8
    atel = d["Atelectasis"]
    assert not atel.assessed and atel.val_auc > 0.75, "a high pooled AUC from the group alone must not pass"
    assert any("scores the group" in r for r in atel.reasons)
    assert not d["Cardiomegaly"].assessed and any("too few" in r for r in d["Cardiomegaly"].reasons)
    assert not d["Edema"].assessed  # no labels at all


def test_leave_one_source_out_collapse_fails_the_gate() -> None:
    probs, labels = _val()
    loso = {"site-b": {"Pneumonia": 0.52, "No Finding": None}}
    d = _by_name(decide_gate(probs, labels, loso=loso))
    assert not d["Pneumonia"].assessed and any("collapses without site-b" in r for r in d["Pneumonia"].reasons)
    assert d["No Finding"].assessed  # not measurable there: no verdict from that source
    assert d["Pneumonia"].loso == {"site-b": 0.52}


def test_stricter_criteria_and_unsupported_observations() -> None:
    probs, labels = _val()
    supported = [o is not Observation.NO_FINDING for o in OBSERVATIONS]
    d = _by_name(decide_gate(probs, labels, criteria=GateCriteria(min_positives=150), supported=supported))
    assert not any(x.assessed for x in d.values())
    assert any("no training source" in r for r in d["No Finding"].reasons)


def test_served_gate_round_trips_and_site_names_are_restricted(tmp_path) -> None:
    from radalign.concepts.calibration import OperatingPoint

    gate = ServedGate(assessed=["No Finding"], operating_points={"No Finding": OperatingPoint(0.2, 0.8, 0.9, 0.9, 0.91, 0.93)},
                      ood_threshold=2.5, name="site-a", recalibration={"No Finding": (0.9, 0.1)}, model_version="v1")
    assert ServedGate.from_triton_parameters(gate.triton_parameters()) == gate
    assert ServedGate.from_triton_parameters({}) is None
    assert profile_path(tmp_path, "site-a.east_2") == tmp_path / "site-a.east_2.json"
    for bad in ("../x", "a/b", "", ".hidden", "x" * 80):
        with pytest.raises(ValueError):
            profile_path(tmp_path, bad)
