from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from radalign.concepts.checkpoint import Checkpoint, save_checkpoint
from radalign.concepts.encoders import register_encoder
from radalign.concepts.model import ConceptAlignmentHead, HeadConfig

TINY_ENCODER = "tiny-test-encoder"


class TinyEncoder(nn.Module):
    """(B, 3, 224, 224) -> (B, 16, 7, 7): a stand-in for EfficientNet so unit tests stay fast."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, kernel_size=32, stride=32)
        self.out_channels = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


@register_encoder(TINY_ENCODER)
def _tiny(pretrained: bool = True) -> nn.Module:
    torch.manual_seed(1234)  # "pretrained" weights: the same every time the encoder is built
    return TinyEncoder()


@pytest.fixture
def tiny_head() -> ConceptAlignmentHead:
    torch.manual_seed(0)
    return ConceptAlignmentHead(HeadConfig(in_channels=16, d_model=32, num_heads=4)).eval()


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, tiny_head: ConceptAlignmentHead) -> Path:
    return save_checkpoint(tmp_path / "tiny.pt", Checkpoint(head=tiny_head, encoder_name=TINY_ENCODER, meta={"note": "unit test"}))


@pytest.fixture
def gated_checkpoint(tmp_path: Path, tiny_head: ConceptAlignmentHead) -> Path:
    """A tiny checkpoint with a validity gate, a calibrator and a fitted OOD detector."""
    import numpy as np

    from radalign.concepts.calibration import OperatingPoint, PlattCalibrator
    from radalign.concepts.gate import ServedGate
    from radalign.concepts.ood import fit_feature_distance

    gate = ServedGate(
        assessed=["No Finding", "Pneumonia"], ood_threshold=3.5,
        operating_points={"No Finding": OperatingPoint(0.2, 0.7, 0.9, 0.9), "Pneumonia": OperatingPoint(0.3, 0.6, 0.9, 0.9)},
    )
    ood = fit_feature_distance(np.random.default_rng(0).normal(size=(64, 16)), components=4)
    ckpt = Checkpoint(head=tiny_head, encoder_name=TINY_ENCODER, meta={"gate": gate.to_dict()}, calibrator=PlattCalibrator(14), ood=ood)
    return save_checkpoint(tmp_path / "gated.pt", ckpt)
