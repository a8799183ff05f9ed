"""Start and stop times of the embedded stack's components (cold and warm), on this machine.

    .venv/bin/python benchmarks/stack_startup.py [--runs 3]

Each run uses a fresh state folder and free ports (beside any dev stack), a one-model Triton
repository (Python backend, add-one) so Triton's own start is measured, not a model's load.
Prints the median and the range of each phase.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from radalign.db import apply_migrations
from radalign.stack import down
from radalign.stack.broker import start_broker
from radalign.stack.postgres import bin_dir, run_as_user, start_postgres, stop_postgres
from radalign.stack.process import StatePaths, stop_process
from radalign.stack.triton import start_triton
from radalign.testing.stack import short_state_dir, stack_settings, write_add_one_model


def one_run(model_repo: Path) -> dict[str, float]:
    state = short_state_dir("radalign-bench-")
    settings = stack_settings(state)
    paths = StatePaths.of(state)
    t: dict[str, float] = {}
    try:
        begin = time.monotonic()
        start_broker(settings, paths)
        t["broker: start + topics"] = time.monotonic() - begin

        begin = time.monotonic()
        start_postgres(settings, paths)  # initdb + pg_ctl start -w
        t["postgres: cold start (initdb + start)"] = time.monotonic() - begin
        begin = time.monotonic()
        apply_migrations(settings.dsn)
        t["postgres: migrations"] = time.monotonic() - begin
        begin = time.monotonic()
        stop_postgres(settings, paths)
        t["postgres: stop (fast)"] = time.monotonic() - begin
        begin = time.monotonic()
        start_postgres(settings, paths)
        t["postgres: warm start"] = time.monotonic() - begin

        begin = time.monotonic()
        start_triton(settings, paths, model_repo)
        t["triton: start until ready (add_one)"] = time.monotonic() - begin
        begin = time.monotonic()
        stop_process(paths, "triton")
        t["triton: stop"] = time.monotonic() - begin

        begin = time.monotonic()
        down(settings)
        t["down (broker + postgres)"] = time.monotonic() - begin
    finally:
        down(settings)
        shutil.rmtree(state, ignore_errors=True)
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    repo = write_add_one_model(Path(tempfile.mkdtemp(prefix="radalign-bench-models-")) / "models")
    samples: dict[str, list[float]] = defaultdict(list)
    try:
        for _ in range(args.runs):
            for phase, seconds in one_run(repo).items():
                samples[phase].append(seconds)
    finally:
        shutil.rmtree(repo.parent, ignore_errors=True)
    print(f"embedded stack start/stop, {args.runs} runs (postgres as {run_as_user() or 'current user'}, binaries {bin_dir().parent})")
    print(f"{'phase':42s} {'median s':>9s} {'min s':>7s} {'max s':>7s}")
    for phase, values in samples.items():
        print(f"{phase:42s} {statistics.median(values):9.2f} {min(values):7.2f} {max(values):7.2f}")


if __name__ == "__main__":
    main()
