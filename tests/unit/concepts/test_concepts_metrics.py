from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radalign.concepts.vocabulary import OBSERVATIONS
from radalign.concepts_training import evaluate as evaluate_module
from radalign.concepts_training.data import Record, coarse_labels
from radalign.concepts_training.metrics import bootstrap_aucs, mean_auc, per_observation_auc, summarise
from schemas.events import Observation

OPACITY = OBSERVATIONS.index(Observation.LUNG_OPACITY)
NAN = np.nan


def _labels(n: int, opacity: list[float]) -> np.ndarray:
    labels = np.full((n, 14), NAN, dtype=np.float32)
    labels[:, OPACITY] = opacity
    return labels


def test_auc_uses_certain_labels_only_and_skips_one_class_observations() -> None:
    labels = _labels(6, [1, 1, 0, 0, -1, NAN])
    probs = np.zeros((6, 14))
    probs[:, OPACITY] = [0.9, 0.8, 0.1, 0.2, 0.0, 0.0]  # the uncertain/unknown rows would ruin a perfect AUC
    aucs = per_observation_auc(probs, labels)
    assert aucs[Observation.LUNG_OPACITY] == 1.0
    assert aucs[Observation.CARDIOMEGALY] is None
    assert mean_auc(aucs) == 1.0


def test_bootstrap_interval_brackets_the_auc() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200).astype(float)
    probs = np.zeros((200, 14))
    probs[:, OPACITY] = y * 0.3 + rng.random(200)
    rows = bootstrap_aucs(probs, _labels(200, list(y)), n_boot=200)
    row = rows[OPACITY]
    assert row.auc is not None and row.ci_low is not None and row.ci_high is not None
    assert row.ci_low < row.auc < row.ci_high and 0.5 < row.auc < 1.0
    assert row.positives + row.negatives == 200
    assert rows[0].auc is None
    assert summarise(rows)["mean_auc_competition"] is None  # no competition observation has both classes


def test_auc_by_source_and_report_retrieval(monkeypatch: pytest.MonkeyPatch) -> None:
    records = [
        Record(image=Path(f"{i}.png"), patient_id=str(i), labels=coarse_labels("COVID-19" if i % 2 else "No Finding"), report=f"r{i % 3}", source="a" if i < 6 else "b")  # type: ignore[arg-type]
        for i in range(12)
    ]
    probs = np.zeros((12, 14))
    probs[:, OPACITY] = [0.9 if i % 2 else 0.1 for i in range(6)] + [0.1 if i % 2 else 0.9 for i in range(6, 12)]
    by_source = evaluate_module.auc_by_source(probs, records)
    assert by_source["a"]["Lung Opacity"] == 1.0 and by_source["b"]["Lung Opacity"] == 0.0

    basis = np.eye(3, 384, dtype=np.float32)  # report "r<k>" -> basis vector k

    class FakeEncoder:
        def encode(self, texts: list[str]) -> np.ndarray:
            return np.stack([basis[int(t[1:])] for t in texts])

    monkeypatch.setattr("radalign.text_encoder.get_text_encoder", lambda: FakeEncoder())
    perfect = np.stack([basis[i % 3] for i in range(12)])
    result = evaluate_module.report_retrieval(perfect, records)
    assert result is not None and result["recall@1"] == 1.0 and result["chance@1"] == pytest.approx(1 / 3)
    wrong = np.stack([basis[(i + 1) % 3] for i in range(12)])
    assert evaluate_module.report_retrieval(wrong, records)["recall@1"] == 0.0  # type: ignore[index]
