"""Frozen-encoder feature cache: encode every image once, train the head on the cached features.

With a frozen encoder the head never needs pixels again, so a CPU run costs one encoder pass
(~1 minute per few hundred images here) and then seconds per epoch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from radalign.concepts.data import Record, load_image, manifest_fingerprint
from radalign.concepts.encoders import build_encoder
from radalign.concepts.model import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)


class ImageDataset(Dataset):
    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(load_image(self.paths[i]))


def normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.expand(-1, 3, -1, -1) - mean) / std


@torch.inference_mode()
def encode_images(
    encoder: torch.nn.Module, paths: Sequence[Path], *, batch_size: int = 32, workers: int = 0, device: str = "cpu", progress: bool = True
) -> np.ndarray:
    """(N, C, h, w) float16 features of the images, in order."""
    from tqdm import tqdm

    encoder = encoder.to(device).eval()
    loader = DataLoader(ImageDataset(paths), batch_size=batch_size, num_workers=workers, shuffle=False)
    chunks = []
    for images in tqdm(loader, desc="encoding images", unit="batch", disable=not progress):
        chunks.append(encoder(normalise(images.to(device))).float().cpu().numpy().astype(np.float16))
    return np.concatenate(chunks)


def cached_features(
    records: Sequence[Record], encoder_name: str, cache_dir: str | Path, *, batch_size: int = 32, workers: int = 0, device: str = "cpu", progress: bool = True
) -> np.ndarray:
    """Features for the records, read from `<cache_dir>/<encoder>-<fingerprint>.npy` or computed once."""
    cache_dir = Path(cache_dir)
    safe_name = encoder_name.replace("/", "_").replace(":", "_")
    path = cache_dir / f"features-{safe_name}-{manifest_fingerprint(records)}.npy"
    if path.exists():
        log.info("feature cache hit: %s", path)
        return np.load(path)
    features = encode_images(build_encoder(encoder_name), [r.image for r in records], batch_size=batch_size, workers=workers, device=device, progress=progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, features)
    tmp.replace(path)
    return features
