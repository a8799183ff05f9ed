"""Throughput of the rule-based labeler on one core: every IU report, best of several passes.

    .venv/bin/python benchmarks/labeler_bench.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from radalign.labeler.engine import label_report
from radalign.labeler.iu import iu_archive_path, load_iu_reports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):  # one core, so the figure does not depend on the machine's width
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if iu_archive_path() is None:
        print("IU reports not found: install torchxrayvision==1.5.7 --no-deps", file=sys.stderr)
        return 2
    started = time.perf_counter()
    texts = [r.text for r in load_iu_reports()]
    load_s = time.perf_counter() - started
    chars = sum(len(t) for t in texts)
    label_report(texts[0])  # warm-up
    passes = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        for text in texts:
            label_report(text)
        passes.append(time.perf_counter() - started)
    best = min(passes)
    print(f"reports: {len(texts)} ({chars / len(texts):.0f} chars on average); archive parse {load_s:.2f} s")
    print(f"passes (s): {', '.join(f'{p:.2f}' for p in passes)}; median {statistics.median(passes):.2f}")
    print(f"throughput on one core: {len(texts) / best:.0f} reports/s (best pass), "
          f"{len(texts) / statistics.median(passes):.0f} reports/s (median); "
          f"{best / len(texts) * 1e3:.2f} ms per report")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
