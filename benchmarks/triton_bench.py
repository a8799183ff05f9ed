"""Throughput of the concept model: Triton with dynamic batching (concurrent requests) vs Triton
batch-1 sequential vs a plain TorchScript forward in this process. Same run, same images.

    .venv/bin/python benchmarks/triton_bench.py [--images 96] [--concurrency 8]

Prints images/s and ratios. Triton runs on free ports in a temporary folder (the shipped
checkpoint exported on the fly), so it does not disturb a running dev stack.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import numpy as np
import torch

from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT
from radalign.concepts.client import TritonConceptClient
from radalign.concepts.data import load_image, pediatric_images
from radalign.concepts.serving import local_concept_triton

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cxr-public" / "images"


def load_images(n: int) -> list[np.ndarray]:
    paths = [p for p, _ in pediatric_images()]
    if SHARED.is_dir():
        paths += sorted(SHARED.glob("*.png"))[:n]
    if not paths:
        raise SystemExit("no images: install pneumonia-model-package or provide ../shared/data")
    return [load_image(paths[i % len(paths)]) for i in range(n)]


def bench_torch(model_file: Path, images: list[np.ndarray], batch: int) -> float:
    model = torch.jit.load(str(model_file)).eval()
    x = torch.from_numpy(np.stack(images))
    with torch.inference_mode():
        model(x[:batch])  # warm-up
        start = time.perf_counter()
        for s in range(0, len(x), batch):
            model(x[s : s + batch])
        return len(x) / (time.perf_counter() - start)


async def bench_triton(url: str, images: list[np.ndarray], concurrency: int) -> float:
    async with TritonConceptClient(url, timeout_s=300) as client:
        if not await client.ready():
            raise SystemExit("Triton model not ready")
        await client.infer(images[0])
        gate = asyncio.Semaphore(concurrency)

        async def one(img: np.ndarray) -> None:
            async with gate:
                await client.infer(img)

        start = time.perf_counter()
        if concurrency == 1:
            for img in images:
                await client.infer(img)
        else:
            await asyncio.gather(*(one(img) for img in images))
        return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    args = parser.parse_args()
    images = load_images(args.images)
    print(f"{len(images)} images, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads in-process)")
    with local_concept_triton(args.checkpoint) as settings:
        model_file = settings.state_dir / "models" / "concept_model" / "1" / "concept_model.pt"
        results = {
            "torch in-process, batch 1": bench_torch(model_file, images, 1),
            "torch in-process, batch 4": bench_torch(model_file, images, 4),
            "torch in-process, batch 16": bench_torch(model_file, images, 16),
            "triton, batch-1 sequential": asyncio.run(bench_triton(settings.triton_grpc_url, images, 1)),
            f"triton, {args.concurrency} concurrent (dynamic batching)": asyncio.run(bench_triton(settings.triton_grpc_url, images, args.concurrency)),
        }
    base = results["triton, batch-1 sequential"]
    print(f"\n{'mode':<48}{'images/s':>10}{'vs triton seq':>15}")
    for name, rate in results.items():
        print(f"{name:<48}{rate:>10.2f}{rate / base:>14.2f}x")


if __name__ == "__main__":
    main()
