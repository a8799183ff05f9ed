from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from radalign.concepts.encoders import MULTISCALE_TAPS, HistogramEqualised, build_encoder, equalise_histogram
from radalign.concepts_training.features import normalise


def _film(seed: int = 0) -> torch.Tensor:
    """(1, 1, 64, 64) in (0, 1] with a black letterbox band at the top, like the preprocess output."""
    g = torch.Generator().manual_seed(seed)
    film = 0.2 + 0.6 * torch.rand(1, 1, 64, 64, generator=g)
    film[..., :8, :] = 0.0
    return film


def test_equalisation_keeps_the_padding_black_and_spreads_the_film_over_the_range() -> None:
    out = equalise_histogram(_film())
    assert torch.all(out[..., :8, :] == 0)
    film = out[..., 8:, :]
    assert float(film.min()) > 0 and float(film.max()) == pytest.approx(1.0)
    assert float(film.mean()) == pytest.approx(0.5, abs=0.02)  # a uniform histogram has mean 1/2


def test_equalisation_removes_brightness_contrast_and_gamma() -> None:
    film = _film()
    valid = film > 0
    # another detector / processing: darker, flatter, different gamma (a monotone change)
    other = torch.where(valid, 0.1 + 0.5 * film.pow(1.8), film)
    assert float((film - other).abs().max()) > 0.2
    assert float((equalise_histogram(film) - equalise_histogram(other)).abs().max()) < 0.03  # quantisation only


def test_equalisation_is_per_image_in_a_batch() -> None:
    a, b = _film(0), _film(1) * 0.5
    batch = equalise_histogram(torch.cat([a, b]))
    assert torch.allclose(batch[0:1], equalise_histogram(a))
    assert torch.allclose(batch[1:2], equalise_histogram(b))


def test_multiscale_encoder_concatenates_the_tapped_blocks_before_the_last_layer() -> None:
    plain = build_encoder("efficientnet-lite0").eval()
    multi = build_encoder("efficientnet-lite0-ms").eval()
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        last, features = plain(images), multi(images)
        x = multi.net._swish(multi.net._bn0(multi.net._conv_stem(images)))
        for block in multi.net._blocks[: MULTISCALE_TAPS[0] + 1]:
            x = block(x)
    assert features.shape == (2, multi.out_channels, 7, 7)
    assert torch.allclose(features[:, -1280:], last, atol=1e-5)
    assert torch.allclose(features[:, : x.shape[1]], F.adaptive_avg_pool2d(x, 7), atol=1e-5)


def test_equalised_encoder_sees_the_same_film_under_two_exposures_alike() -> None:
    encoder = build_encoder("efficientnet-lite0-ms-eq").eval()
    assert isinstance(encoder, HistogramEqualised)
    plain = build_encoder("efficientnet-lite0-ms").eval()
    film = F.interpolate(_film(), size=224, mode="nearest")
    other = torch.where(film > 0, 0.05 + 0.6 * film.pow(2.0), film)
    with torch.no_grad():
        eq_gap = (encoder(normalise(film)) - encoder(normalise(other))).abs().mean()
        raw_gap = (plain(normalise(film)) - plain(normalise(other))).abs().mean()
    assert float(eq_gap) < 0.2 * float(raw_gap)
