"""Attention heatmaps: the head's hook, display windowing and the overlay."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from radalign.concepts.heatmaps import display_window, image_png, overlay_png, upsample
from radalign.concepts.model import ConceptAlignmentHead, HeadConfig


def _head() -> ConceptAlignmentHead:
    torch.manual_seed(0)
    return ConceptAlignmentHead(HeadConfig(in_channels=16, d_model=32, num_heads=4)).eval()


def test_attention_hook_returns_one_distribution_per_concept_and_changes_nothing_else():
    head = _head()
    features = torch.randn(2, 16, 7, 7)
    plain = head(features)
    hooked = head(features, return_attention=True)
    assert plain.attention is None
    assert hooked.attention.shape == (2, 14, 49)
    assert torch.allclose(hooked.attention.sum(-1), torch.ones(2, 14), atol=1e-5)
    assert torch.allclose(plain.logits, hooked.logits, atol=1e-6) and torch.allclose(plain.embedding, hooked.embedding, atol=1e-6)


def test_attention_follows_the_features():
    """Identical tokens give uniform attention; a film with structure moves it (the map is the image's, not the head's)."""
    head = _head()
    with torch.no_grad():
        head.position.zero_()
        head.queries.mul_(100)  # trained queries are far from their 0.02 initialisation
    flat = head(torch.zeros(1, 16, 7, 7), return_attention=True).attention[0]
    assert torch.allclose(flat, torch.full_like(flat, 1 / 49), atol=1e-4)
    features = torch.zeros(1, 16, 7, 7)
    features[0, :, 2, 5] = torch.randn(16) * 5
    moved = head(features, return_attention=True).attention[0]
    assert (moved[:, 2 * 7 + 5] - 1 / 49).abs().max() > 0.01


def test_display_window_ignores_letterbox_padding():
    image = np.zeros((224, 224), dtype=np.float32)
    image[:, 32:192] = np.linspace(0.3, 0.5, 160, dtype=np.float32)[None, :]
    shown = display_window(image)
    assert shown.dtype == np.uint8 and shown[:, :32].max() == 0
    assert shown[:, 33:191].min() <= 5 and shown[:, 33:191].max() >= 250  # the body spans the full range


def test_overlay_is_an_rgb_png_the_size_of_the_film_and_brightest_where_attention_is():
    rng = np.random.default_rng(0)
    film = rng.uniform(0.4, 0.6, size=(1, 224, 224)).astype(np.float32)
    attention = np.zeros((7, 7), dtype=np.float32)
    attention[0, 0] = 1.0
    with Image.open(io.BytesIO(overlay_png(film, attention))) as img:
        assert img.mode == "RGB" and img.size == (224, 224)
        rgb = np.asarray(img, dtype=np.float32)
    # inferno's top end is yellow: red+green high in the attended corner, untouched gray elsewhere.
    assert rgb[:16, :16, 0].mean() > rgb[-32:, -32:, 0].mean() + 40
    assert np.allclose(rgb[-32:, -32:, 0], rgb[-32:, -32:, 2], atol=1)
    with Image.open(io.BytesIO(image_png(film))) as img:
        assert img.mode == "L" and img.size == (224, 224)
    assert upsample(np.ones((7, 7)), (224, 224)).max() == 0.0  # a flat map carries no location


@pytest.mark.slow
def test_concept_attention_on_the_shipped_checkpoint_matches_the_forward_pass():
    from radalign.concepts.heatmaps import ConceptAttention

    attention = ConceptAttention()
    film = np.random.default_rng(1).uniform(0, 1, size=(1, 224, 224)).astype(np.float32)
    maps = attention.maps(film)
    assert maps.maps.shape == (14, 7, 7) and np.allclose(maps.maps.sum(axis=(1, 2)), 1, atol=1e-4)
    model = attention._load()
    with torch.inference_mode():
        probabilities, embedding, _ood_distance = model(torch.from_numpy(film)[None])
    assert np.allclose(maps.probabilities, probabilities[0].numpy(), atol=1e-6)
    assert np.allclose(attention.embedding(film), embedding[0].numpy(), atol=1e-6)
