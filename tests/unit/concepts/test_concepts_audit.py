"""End to end on synthetic images with a tiny encoder: multi-source training writes a gate (with
leave-one-source-out figures, calibration and an OOD threshold) into the checkpoint, evaluation
reads it, and a site audit writes a profile the concept stage then selects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from radalign.concepts.checkpoint import load_checkpoint
from radalign.concepts.inference import select_gate
from radalign.concepts_training.audit import audit
from radalign.concepts_training.evaluate import evaluate
from radalign.concepts_training.sources import write_manifest
from radalign.concepts_training.train import TrainConfig, train

TINY_ENCODER = "tiny-test-encoder"  # registered in conftest.py


@pytest.fixture(autouse=True)
def _random_anchors(monkeypatch: pytest.MonkeyPatch) -> None:
    import radalign.concepts_training.train as train_module

    monkeypatch.setattr(train_module, "compute_anchors", lambda: torch.nn.functional.normalize(torch.randn(14, 3, 384), dim=-1))


def _images(tmp_path: Path, source: str, n: int, seed: int, brightness: float) -> list[dict[str, str]]:
    """Abnormal films carry a bright blob; each source has its own background level."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        normal = i % 2 == 0
        pixels = rng.random((64, 64)) * 0.3 + brightness
        if not normal:
            pixels[16:48, 16:48] += 0.5
        path = tmp_path / f"{source}-{i}.png"
        Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(path)
        rows.append({"image": str(path), "patient_id": f"{source}:{i}", "source": source, "label": "No Finding" if normal else "Pneumonia"})
    return rows


def test_multisource_training_gates_and_a_site_audit_writes_a_profile(tmp_path: Path) -> None:
    manifest = write_manifest(_images(tmp_path, "site-a", 60, 0, 0.1) + _images(tmp_path, "site-b", 60, 1, 0.3), tmp_path / "train.csv")
    cfg = TrainConfig(manifest=manifest, out=tmp_path / "head.pt", cache_dir=tmp_path / "cache", encoder=TINY_ENCODER, d_model=32, epochs=6,
                      patience=6, batch_size=16, progress=False, contrastive_weight=0.0, lr=3e-3)
    ckpt = load_checkpoint(train(cfg).checkpoint)
    meta = ckpt.meta
    assert set(meta["loso"]) == {"site-a", "site-b"}  # one re-training without each source
    assert meta["source_label_masks"]["site-a"] == ["No Finding", "Lung Opacity", "Pneumonia"]
    gate = ckpt.gate
    assert gate is not None and gate.ood_threshold is not None
    decisions = {d["observation"]: d for d in meta["gate_decisions"]}
    # the claim policy narrows the gate: an observation is served only with a state it has earned
    assert set(gate.assessed) <= {o for o, d in decisions.items() if d["assessed"]}
    assert gate.policy is not None and set(gate.policy.observations) == set(gate.assessed)
    assert not decisions["Cardiomegaly"]["assessed"]  # no source labels it
    for name in gate.assessed:
        assert decisions[name]["val_auc"] >= 0.75 and gate.operating_points[name].absent <= gate.operating_points[name].present
    report = evaluate(cfg.out, manifest, cache_dir=cfg.cache_dir, n_boot=20, roc_png=None)
    assert report.assessed == gate.assessed and set(report.by_source_rows) == {"site-a", "site-b"}
    assert report.ood is not None and 0 <= report.ood["flagged"] <= 1
    assert set(report.loso) == {"site-a", "site-b"}

    site = write_manifest(_images(tmp_path, "site-c", 48, 2, 0.2), tmp_path / "site.csv")
    result = audit(site, "site-c", checkpoint=cfg.out, profiles_dir=tmp_path / "profiles", cache_dir=cfg.cache_dir)
    assert result.profile == tmp_path / "profiles" / "site-c.json" and result.profile.is_file()
    assert result.films == 48 and result.gate.model_version == ckpt.version
    assert set(result.per_observation["Pneumonia"]) >= {"decision", "fit_auc", "report_auc", "ece_before", "ece_after"}
    chosen = select_gate(gate, "site-c", tmp_path / "profiles", ckpt.version)
    assert chosen is not None and chosen.name == "site-c" and chosen.assessed == result.gate.assessed
    with pytest.raises(ValueError):
        audit(site, "../escape", checkpoint=cfg.out, profiles_dir=tmp_path / "profiles", cache_dir=cfg.cache_dir)
