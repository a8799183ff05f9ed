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
from radalign.concepts_training.data import load_image, pediatric_images
from radalign.testing.triton import local_concept_triton

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cxr-public" / "images"


def load_images(n: int) -> list[np.ndarray]:
    paths = [p for p, _ in pediatric_images()]
    if SHARED.is_dir():
        paths += sorted(SHARED.glob("*.png"))[:n]
    if not paths:
        raise SystemExit("no images: install pneumonia-model-package or provide ../shared/data")
    return [load_image(paths[i % len(paths)]) for i in range(n)]


def bench_torch(model: torch.jit.ScriptModule, images: list[np.ndarray], batch: int) -> tuple[float, list[float]]:
    """(images/s, per-batch latencies in ms)."""
    x = torch.from_numpy(np.stack(images))
    latencies = []
    with torch.inference_mode():
        model(x[:batch])  # warm-up
        start = time.perf_counter()
        for s in range(0, len(x), batch):
            t = time.perf_counter()
            model(x[s : s + batch])
            latencies.append((time.perf_counter() - t) * 1000)
        return len(x) / (time.perf_counter() - start), latencies


async def bench_triton(url: str, images: list[np.ndarray], concurrency: int) -> tuple[float, list[float]]:
    """(images/s, per-request latencies in ms) with `concurrency` requests in flight."""
    async with TritonConceptClient(url, timeout_s=300) as client:
        if not await client.ready():
            raise SystemExit("Triton model not ready")
        await client.infer(images[0])
        gate = asyncio.Semaphore(concurrency)
        latencies: list[float] = []

        async def one(img: np.ndarray) -> None:
            async with gate:
                t = time.perf_counter()
                await client.infer(img)
                latencies.append((time.perf_counter() - t) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(one(img) for img in images))
        return len(images) / (time.perf_counter() - start), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; modes alternate within a round (the machine is noisy)")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    args = parser.parse_args()
    images = load_images(args.images)
    print(f"{len(images)} images, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads in-process), {args.repeats} rounds")
    seq, conc = "triton, batch-1 sequential", f"triton, {args.concurrency} concurrent (dynamic batching)"
    rates: dict[str, list[float]] = {}
    lat: dict[str, list[float]] = {}
    with local_concept_triton(args.checkpoint) as settings:
        model = torch.jit.load(str(settings.state_dir / "models" / "concept_model" / "1" / "concept_model.pt")).eval()
        modes = {
            "torch in-process, batch 1": lambda: bench_torch(model, images, 1),
            "torch in-process, batch 4": lambda: bench_torch(model, images, 4),
            "torch in-process, batch 16": lambda: bench_torch(model, images, 16),
            seq: lambda: asyncio.run(bench_triton(settings.triton_grpc_url, images, 1)),
            conc: lambda: asyncio.run(bench_triton(settings.triton_grpc_url, images, args.concurrency)),
        }
        for _ in range(args.repeats):
            for name, run in modes.items():
                rate, latencies = run()
                rates.setdefault(name, []).append(rate)
                lat.setdefault(name, []).extend(latencies)
    base = float(np.median(rates[seq]))
    print(f"\n{'mode':<48}{'images/s (median [min-max])':>30}{'vs triton seq':>15}{'p50 ms':>9}{'p95 ms':>9}")
    for name, values in rates.items():
        med = float(np.median(values))
        p50, p95 = np.percentile(lat[name], [50, 95])
        print(f"{name:<48}{med:>12.1f} [{min(values):5.1f}-{max(values):5.1f}]{'':>4}{med / base:>14.2f}x{p50:>9.1f}{p95:>9.1f}")
    print("\nlatency: per forward call (torch) or per request (triton, queueing included)")


if __name__ == "__main__":
    main()
