"""The fine-tuning path (encoder trained too, images through a DataLoader) runs end to end on a
tiny encoder and synthetic images, stores the encoder weights, and resumes from its last state."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from radalign.concepts.checkpoint import load_checkpoint
from radalign.concepts.encoders import build_encoder
from radalign.concepts_training.evaluate import evaluate
from radalign.concepts_training.train import TrainConfig, train

TINY_ENCODER = "tiny-test-encoder"  # registered in conftest.py


@pytest.fixture(autouse=True)
def _random_anchors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random text anchors: keeps the sentence encoder (seconds to load) out of these unit tests."""
    import radalign.concepts_training.train as train_module

    monkeypatch.setattr(train_module, "compute_anchors", lambda: torch.nn.functional.normalize(torch.randn(14, 3, 384), dim=-1))


def _manifest(tmp_path: Path, n: int = 24) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        normal = i % 2 == 0
        # "abnormal" images carry a bright blob: something a conv can pick up in a few steps
        pixels = rng.random((64, 64)) * 0.3
        if not normal:
            pixels[20:44, 20:44] += 0.6
        path = tmp_path / f"img{i}.png"
        Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(path)
        rows.append({"image": path.name, "patient_id": f"p{i}", "label": "No Finding" if normal else "COVID-19", "report": ""})
    out = tmp_path / "m.csv"
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_finetune_stores_encoder_weights_and_evaluates_through_the_full_model(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    cfg = TrainConfig(manifest=manifest, out=tmp_path / "ft.pt", cache_dir=tmp_path / "cache", encoder=TINY_ENCODER, d_model=32,
                      epochs=2, batch_size=8, finetune=True, progress=False, fractions=(0.5, 0.25, 0.25))
    result = train(cfg)
    assert result.epochs_run == 2 and not (tmp_path / "ft.last.pt").exists()
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt.encoder_state is not None
    pristine = build_encoder(TINY_ENCODER).state_dict()
    assert any(not torch.equal(ckpt.encoder_state[k], v) for k, v in pristine.items()), "encoder was not trained"
    assert ckpt.meta["supported_observations"] == ["No Finding", "Lung Opacity", "Pneumonia"]
    report = evaluate(result.checkpoint, manifest, cache_dir=cfg.cache_dir, n_boot=20)
    assert report.images > 0 and len(report.rows) == 14


def test_an_interrupted_run_resumes_from_its_last_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import radalign.concepts_training.train as train_module

    manifest = _manifest(tmp_path)
    cfg = TrainConfig(manifest=manifest, out=tmp_path / "h.pt", cache_dir=tmp_path / "cache", encoder=TINY_ENCODER, d_model=32, batch_size=8,
                      progress=False, fractions=(0.5, 0.25, 0.25), patience=100, epochs=4)
    real_mean_auc = train_module.mean_auc
    calls = {"n": 0}

    def crash_on_third_validation(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated interruption in epoch 3")
        return real_mean_auc(*args, **kwargs)

    monkeypatch.setattr(train_module, "mean_auc", crash_on_third_validation)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert (tmp_path / "h.last.pt").exists() and not (tmp_path / "h.pt").exists()

    calls["n"] = 10  # no more crashes; count the epochs the second run validates
    result = train(cfg)
    assert calls["n"] == 12, "the resumed run should only run epochs 3 and 4"
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert not (tmp_path / "h.last.pt").exists()


def test_a_validation_split_that_cannot_be_scored_is_refused_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import radalign.concepts_training.train as train_module
    from radalign.concepts_training.train import ValidationUnscorable

    manifest = _manifest(tmp_path)  # even rows normal, odd rows abnormal

    def normal_only_validation(records, fractions, seed):
        return {"train": list(range(0, 16)), "val": [16, 18, 20, 22], "test": [17, 19, 21, 23]}

    monkeypatch.setattr(train_module, "split_by_source", normal_only_validation)
    cfg = TrainConfig(manifest=manifest, out=tmp_path / "x.pt", cache_dir=tmp_path / "cache", encoder=TINY_ENCODER, d_model=32,
                      epochs=2, batch_size=8, finetune=True, progress=False, fractions=(0.5, 0.25, 0.25))
    with pytest.raises(ValidationUnscorable, match="cannot be scored"):
        train(cfg)
