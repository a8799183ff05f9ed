"""What serving many sites on one encoder costs: the encoder + generic head pass per film against
the site head that runs after it, measured side by side in one run on this machine's CPU.

    PYTHONPATH=. python benchmarks/site_heads_bench.py [--batches 20] [--batch-size 4]

The served pass is the exported TorchScript (what Triton runs); the site head is the shipped
nih-cxr800 head file (what Triton loads per site). Prints films/s of each and the share of a
film's time the site head adds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from radalign.concepts_training.export import export_torchscript
from radalign.sites.head import load_head
from radalign.sites.registry import SHIPPED_DIR
from schemas.model_input import INPUT_SIZE


def films_per_second(fn: Callable[[], object], batches: int, batch_size: int) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        fn()
    return batches * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as one Triton CPU instance runs
    with tempfile.TemporaryDirectory() as tmp:
        served = torch.jit.load(str(export_torchscript(out_path=Path(tmp) / "m.pt"))).eval()
    head, meta = load_head(sorted((SHIPPED_DIR / "nih-cxr800").glob("*.pt"))[-1])
    images = torch.rand(args.batch_size, 1, INPUT_SIZE, INPUT_SIZE)
    with torch.inference_mode():
        pooled = served(images)[3]
        encoder = films_per_second(lambda: served(images), args.batches, args.batch_size)
        site = films_per_second(lambda: head(pooled), args.batches * 50, args.batch_size)
    print(f"encoder + generic head (TorchScript, 1 thread, batch {args.batch_size}): {encoder:9.1f} films/s")
    print(f"site head {meta['version']} on the pooled features:        {site:9.1f} films/s")
    print(f"a site head adds {100 * encoder / site:.2f} % to a film's model time (ratio {site / encoder:.0f}x faster than the shared pass)")


if __name__ == "__main__":
    main()
