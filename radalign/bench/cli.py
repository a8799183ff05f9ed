"""`radalign bench`: the whole pipeline (gateway to delivered report) beside each stage alone, a
sequential baseline, and STAT under a routine backlog, in one run (the CLI mounts `bench_app`).

    radalign bench                                  # defaults: 200 studies, a 1,000-study backlog
    radalign bench --studies 100 --skip stat        # quicker: no STAT phases

Imports stay inside the command: the CLI starts without loading the stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

bench_app = typer.Typer(no_args_is_help=False, invoke_without_command=True,
                        help="One benchmark run: pipeline to delivered report, each stage alone, baseline, STAT under a backlog.")


@bench_app.callback()
def bench(
    studies: Annotated[int, typer.Option(help="studies through the pipeline (and through each stage alone)")] = 200,
    clients: Annotated[int, typer.Option(help="concurrent HTTP clients posting to the gateway")] = 4,
    cases: Annotated[int, typer.Option(help="IU reports loaded into the case store")] = 1000,
    stat_every: Annotated[int, typer.Option(help="every Nth pipeline study is STAT")] = 10,
    idle_stat: Annotated[int, typer.Option(help="STAT studies, one at a time, into the idle pipeline")] = 15,
    backlog: Annotated[int, typer.Option(help="routine studies queued before STAT studies are injected")] = 1000,
    backlog_stat: Annotated[int, typer.Option(help="STAT studies injected while the backlog drains")] = 20,
    stat_interval_s: Annotated[float, typer.Option(help="seconds between injected STAT studies")] = 3.0,
    baseline_studies: Annotated[int, typer.Option(help="studies through the sequential in-process baseline")] = 60,
    pacs: Annotated[str, typer.Option(help="how Orthanc receives the SR: stow (STOW-RS) or dicom (C-STORE)")] = "stow",
    out: Annotated[Path, typer.Option(help="folder for bench.json and bench.png")] = Path(".radalign/reports/bench"),
    skip: Annotated[list[str], typer.Option(help="phases to skip: stat, alone, baseline (repeatable)")] = [],  # noqa: B006  # typer reads the default; never mutated
) -> None:
    from radalign.bench.run import Options, main

    if pacs not in ("stow", "dicom"):
        raise typer.BadParameter("--pacs is stow or dicom")
    raise typer.Exit(main(Options(studies, clients, cases, stat_every, idle_stat, backlog, backlog_stat, stat_interval_s,
                                  baseline_studies, pacs, out, set(skip))))
