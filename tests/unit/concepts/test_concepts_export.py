from __future__ import annotations

import re
from pathlib import Path

import torch

from radalign.concepts.checkpoint import load_checkpoint
from radalign.concepts_training.export import MODEL_FILE, export_torchscript, exported_version, prepare_model_repository


def test_checkpoint_round_trip_keeps_weights_and_version(tiny_checkpoint: Path) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    assert ckpt.version.startswith("concepts.v1-")  # the concepts file's version + the weights' digest
    assert ckpt.encoder_state is None  # encoder weights come from the encoder's package
    again = load_checkpoint(tiny_checkpoint)
    for (k, a), (_, b) in zip(ckpt.head.state_dict().items(), again.head.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_torchscript_export_matches_eager_at_any_batch_size(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = export_torchscript(tiny_checkpoint, tmp_path / "m.pt")
    traced = torch.jit.load(str(out))
    model = load_checkpoint(tiny_checkpoint).build_model()
    for batch in (1, 7):
        x = torch.rand(batch, 1, 224, 224)
        with torch.inference_mode():
            want, got = model(x), traced(x)
        assert got[0].shape == (batch, 14) and got[1].shape == (batch, 384) and got[2].shape == (batch,)
        for w, g in zip(want, got[:3], strict=True):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)
        # the fourth output is what each site head reads: the encoder's pooled features (the tiny
        # test encoder has no multi-scale twin: its own output)
        with torch.inference_mode():
            pooled = model.encoder(model.normalise(x)).mean(dim=(2, 3))
        torch.testing.assert_close(got[3], pooled, atol=1e-5, rtol=1e-4)
    assert exported_version(out) == load_checkpoint(tiny_checkpoint).version


def test_prepare_model_repository_exports_once_and_records_the_version(tiny_checkpoint: Path, tmp_path: Path) -> None:
    dst = prepare_model_repository(dst=tmp_path / "repo", checkpoint=tiny_checkpoint)
    model_dir = dst / "concept_model"
    exported = model_dir / "1" / MODEL_FILE
    assert (model_dir / "1" / "model.py").is_file() and exported.is_file()
    assert not (model_dir / "config.gpu.pbtxt").exists()
    config = (model_dir / "config.pbtxt").read_text()
    version = load_checkpoint(tiny_checkpoint).version
    assert f'key: "model_version" value {{ string_value: "{version}" }}' in config
    assert "KIND_CPU" in config
    mtime = exported.stat().st_mtime_ns
    prepare_model_repository(dst=dst, checkpoint=tiny_checkpoint)  # same version: no re-export
    assert exported.stat().st_mtime_ns == mtime
    assert (model_dir / "config.pbtxt").read_text().count('key: "model_version"') == 1
    gpu = prepare_model_repository(dst=tmp_path / "gpu", checkpoint=tiny_checkpoint, gpu=True)
    assert "KIND_GPU" in (gpu / "concept_model" / "config.pbtxt").read_text()


def test_the_gate_travels_from_the_checkpoint_into_the_triton_config(gated_checkpoint: Path, tmp_path: Path) -> None:
    from radalign.concepts.gate import ServedGate

    dst = prepare_model_repository(dst=tmp_path / "repo", checkpoint=gated_checkpoint)
    config = (dst / "concept_model" / "config.pbtxt").read_text()
    params = dict(re.findall(r'key: "([^"]+)" value \{ string_value: "((?:[^"\\]|\\.)*)" \}', config))
    params = {k: v.encode().decode("unicode_escape") for k, v in params.items()}
    assert params["assessed_observations"] == "No Finding|Pneumonia"
    served = ServedGate.from_triton_parameters(params)
    assert served is not None and served.to_dict() == load_checkpoint(gated_checkpoint).gate.to_dict()
    assert 'name: "ood_score"' in config
    # preparing again replaces the parameters instead of appending copies
    prepare_model_repository(dst=dst, checkpoint=gated_checkpoint)
    assert (dst / "concept_model" / "config.pbtxt").read_text().count('key: "concept_gate"') == 1


def test_a_calibrated_checkpoint_is_a_new_version(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from radalign.concepts.calibration import PlattCalibrator
    from radalign.concepts.checkpoint import save_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    ckpt.calibrator = PlattCalibrator(14)
    ckpt.calibrator.scale.fill_(0.7)
    again = load_checkpoint(save_checkpoint(tmp_path / "cal.pt", ckpt))
    assert again.version != load_checkpoint(tiny_checkpoint).version
    assert torch.equal(again.calibrator.scale, torch.full((14,), 0.7))
