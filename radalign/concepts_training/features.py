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

from radalign.concepts.encoders import build_encoder
from radalign.concepts.model import IMAGENET_MEAN, IMAGENET_STD
from radalign.concepts_training.data import Record, load_image

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


def image_cache_key(path: Path, encoder_name: str) -> str:
    """Key of one image's features: encoder, image pipeline version, resolved path and mtime."""
    import hashlib

    from radalign.concepts_training.data import IMAGE_PIPELINE_VERSION

    path = Path(path)
    raw = f"{encoder_name}|{IMAGE_PIPELINE_VERSION}|{path.resolve()}|{path.stat().st_mtime_ns}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def cached_features(
    records: Sequence[Record], encoder_name: str, cache_dir: str | Path, *, batch_size: int = 32, workers: int = 0, device: str = "cpu", progress: bool = True
) -> np.ndarray:
    """(N, C, h, w) float16 features of the records' images, encoded once per image.

    Cached per image (`<cache_dir>/features/<encoder>/<key>.npy`), not per manifest, so that any
    subset or re-ordering (leave-one-source-out runs, audits of other manifests, evaluation of a
    manifest after training on a larger one) reuses what was encoded before."""
    safe_name = encoder_name.replace("/", "_").replace(":", "_")
    folder = Path(cache_dir) / "features" / safe_name
    keys = [image_cache_key(r.image, encoder_name) for r in records]
    missing = sorted({k: r.image for k, r in zip(keys, records, strict=True) if not (folder / f"{k}.npy").exists()}.items())
    if missing:
        log.info("encoding %d of %d images (the rest are cached in %s)", len(missing), len(records), folder)
        folder.mkdir(parents=True, exist_ok=True)
        encoder = build_encoder(encoder_name)
        chunk = 256  # save as we go: an interrupted run keeps what it encoded
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            feats = encode_images(encoder, [p for _, p in part], batch_size=batch_size, workers=workers, device=device, progress=progress)
            for (key, _), f in zip(part, feats, strict=True):
                tmp = folder / f".{key}.{os.getpid()}.tmp.npy"
                np.save(tmp, f)
                tmp.replace(folder / f"{key}.npy")
            if progress:
                log.info("encoded %d / %d", min(start + chunk, len(missing)), len(missing))
    else:
        log.info("feature cache hit for all %d images: %s", len(records), folder)
    return np.stack([np.load(folder / f"{k}.npy") for k in keys]) if keys else np.zeros((0,), dtype=np.float16)
