from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from radalign.concepts import EMBED_DIM
from radalign.concepts.encoders import build_encoder
from radalign.concepts.model import ConceptAlignmentHead, ConceptModel, HeadConfig

TINY_ENCODER = "tiny-test-encoder"  # registered in conftest.py


def test_head_shapes_and_normalised_embedding(tiny_head: ConceptAlignmentHead) -> None:
    out = tiny_head(torch.randn(5, 16, 7, 7))
    assert out.logits.shape == (5, 14)
    assert out.state_logits.shape == (5, 14, 3)
    assert out.embedding.shape == (5, EMBED_DIM)
    assert torch.allclose(out.embedding.norm(dim=-1), torch.ones(5), atol=1e-5)


def test_logit_is_present_minus_absent_similarity_plus_bias(tiny_head: ConceptAlignmentHead) -> None:
    with torch.no_grad():
        tiny_head.concept_bias.fill_(0.25)
        out = tiny_head(torch.randn(2, 16, 7, 7))
    assert torch.allclose(out.logits, out.state_logits[..., 0] - out.state_logits[..., 1] + 0.25, atol=1e-5)


def test_unsupported_observations_answer_exactly_one_half(tiny_head: ConceptAlignmentHead) -> None:
    with torch.no_grad():
        tiny_head.supported[2:] = False
        tiny_head.concept_bias.fill_(3.0)
        probs = torch.sigmoid(tiny_head(torch.randn(4, 16, 7, 7)).logits)
    assert torch.all(probs[:, 2:] == 0.5)
    assert torch.all(probs[:, :2] != 0.5)
    assert "supported" in tiny_head.state_dict()


def test_anchors_are_stored_normalised_and_shape_checked() -> None:
    anchors = torch.randn(14, 3, EMBED_DIM) * 3
    head = ConceptAlignmentHead(HeadConfig(in_channels=16, d_model=32), anchors)
    assert torch.allclose(head.anchors, F.normalize(anchors, dim=-1))
    assert "anchors" in head.state_dict()  # travels with the checkpoint: serving needs no text encoder
    with pytest.raises(ValueError):
        ConceptAlignmentHead(HeadConfig(in_channels=16, d_model=32), torch.randn(14, 2, EMBED_DIM))


def test_full_model_takes_grayscale_and_returns_probabilities(tiny_head: ConceptAlignmentHead) -> None:
    model = ConceptModel(build_encoder(TINY_ENCODER), tiny_head).eval()
    with torch.inference_mode():
        probs, emb, ood = model(torch.rand(3, 1, 224, 224))
    assert probs.shape == (3, 14) and emb.shape == (3, EMBED_DIM) and ood.shape == (3,)
    assert torch.equal(ood, torch.zeros(3))  # an unfitted OOD detector scores everything 0
    assert float(probs.min()) >= 0.0 and float(probs.max()) <= 1.0
    # ImageNet normalisation of a replicated gray channel
    x = torch.full((1, 1, 224, 224), 0.5)
    normalised = model.normalise(x)
    assert normalised.shape == (1, 3, 224, 224)
    assert torch.allclose(normalised[0, :, 0, 0], (0.5 - model.mean.view(3)) / model.std.view(3))


def test_unknown_encoder_names_are_refused() -> None:
    with pytest.raises(KeyError):
        build_encoder("no-such-encoder")


def test_full_model_applies_the_calibrator_to_the_head_logits(tiny_head: ConceptAlignmentHead) -> None:
    from radalign.concepts.calibration import PlattCalibrator

    calibrator = PlattCalibrator(14)
    calibrator.scale.fill_(0.5)
    calibrator.bias.fill_(-1.0)
    tiny_head.supported[3] = False
    model = ConceptModel(build_encoder(TINY_ENCODER), tiny_head, calibrator).eval()
    x = torch.rand(2, 1, 224, 224)
    with torch.inference_mode():
        logits = model.forward_train(x).logits
        probs, _, _ = model(x)
    want = torch.sigmoid(0.5 * logits - 1.0)
    want[:, 3] = 0.5  # an observation the model never learnt stays exactly 0.5
    torch.testing.assert_close(probs, want)
