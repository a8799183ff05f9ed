"""`radalign label ...`: label report files, one report text, or every IU report (the CLI mounts `label_app`).

    radalign label FILE [--out labels.csv]     CSV / JSONL / a folder of .txt files, streamed
    radalign label text "No pneumothorax."     one text, with --mentions
    radalign label iu --out iu.csv             the IU reports of the torchxrayvision wheel

Imports stay inside the commands: the CLI starts without loading the labeler's tables.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup


class _FileOrCommandGroup(TyperGroup):
    """`radalign label FILE` runs the `file` command when FILE is not a sub-command's name."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:  # type: ignore[override]  # typer vendors click: its TyperGroup uses typer._click types, not click's
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["file", *args]
        return super().resolve_command(ctx, args)  # type: ignore[arg-type, return-value]  # typer vendors click: its TyperGroup uses typer._click types, not click's


label_app = typer.Typer(
    cls=_FileOrCommandGroup, no_args_is_help=True,
    help="Rule-based CheXpert labels of report text: `radalign label FILE` for CSV, JSONL or a folder of .txt files.",
)


@label_app.command("file")
def label_file(
    path: Annotated[Path, typer.Argument(help="a .csv, .jsonl/.ndjson or .txt file, or a folder of .txt files")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="where to write (default: standard output)")] = None,
    output_format: Annotated[str, typer.Option("--format", help="csv or jsonl")] = "csv",
    uncertainty: Annotated[str, typer.Option(help="keep, strict (uncertain -> 0) or lenient (uncertain -> 1)")] = "keep",
    hierarchy: Annotated[bool, typer.Option(help="CheXpert hierarchy: Lung Opacity from its children")] = True,
    progress: Annotated[bool, typer.Option(help="progress bar with reports/s on standard error")] = True,
) -> None:
    """Label every report of FILE, streaming: one output row per report as it is read."""
    from tqdm import tqdm

    from radalign.labeler.batch import (
        OUTPUT_COLUMNS,
        BatchInputError,
        Skipped,
        count_reports,
        detect_format,
        label_stream,
        read_reports,
    )

    if output_format not in ("csv", "jsonl"):
        raise typer.BadParameter("--format is csv or jsonl")
    if uncertainty not in ("keep", "strict", "lenient"):
        raise typer.BadParameter("--uncertainty is keep, strict or lenient")
    skipped = Skipped()
    try:
        fmt = detect_format(path) if path.exists() else None
        reports = read_reports(path, skipped, fmt)
        total = count_reports(path, fmt) if fmt else None
        handle = out.open("w", newline="", encoding="utf-8") if out else sys.stdout
        started, written = time.perf_counter(), 0
        try:
            writer: Any = csv.DictWriter(handle, fieldnames=OUTPUT_COLUMNS) if output_format == "csv" else None
            if writer is not None:
                writer.writeheader()
            bar = tqdm(total=total, desc=f"labeling {path.name}", unit=" reports", disable=not progress, file=sys.stderr)
            with bar:
                for row in label_stream(reports, uncertainty=uncertainty, hierarchy=hierarchy):  # type: ignore[arg-type]  # the CLI option is checked against the Literal by typer
                    if writer is not None:
                        writer.writerow(row)
                    else:
                        handle.write(json.dumps(row) + "\n")
                    written += 1
                    bar.update(1)
        finally:
            if out:
                handle.close()
    except BatchInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    seconds = time.perf_counter() - started
    typer.echo(
        f"labelled {written} reports in {seconds:.1f} s ({written / max(seconds, 1e-9):,.0f} reports/s)"
        + (f"; skipped {skipped.count}: {'; '.join(skipped.reasons[:5])}{' ...' if skipped.count > 5 else ''}" if skipped.count else "")
        + (f"; wrote {out}" if out else ""),
        err=True,
    )


@label_app.command("text")
def label_text(
    text: Annotated[str, typer.Argument(help="report text (FINDINGS and/or IMPRESSION)")],
    mentions: Annotated[bool, typer.Option("--mentions", help="also print each mention and its certainty")] = False,
) -> None:
    """Print the CheXpert labels of one report text."""
    from radalign.labeler.engine import aggregate_report, find_mentions

    found = find_mentions(text)
    result = aggregate_report(found)
    for observation, certainty in result.labels.items():
        typer.echo(f"{observation.value}: {certainty.value}")
    for observation in sorted(result.not_assessed, key=lambda o: o.value):
        typer.echo(f"{observation.value}: not assessed")
    if mentions:
        for m in found:
            state = "not assessed" if m.not_assessed else m.certainty.value
            typer.echo(f"  [{m.sentence_index}] {m.observation.value} {state}: {m.phrase!r} {m.span}")


@label_app.command("iu")
def label_iu(
    out: Annotated[Path, typer.Option("--out", help="CSV file to write (uid, split, the 14 observations)")],
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Label every IU report (from the torchxrayvision wheel) into a CheXpert-style CSV."""
    from tqdm import tqdm

    from radalign.labeler.batch import CHEXPERT_CODE
    from radalign.labeler.engine import label_report
    from radalign.labeler.evaluate import split_of
    from radalign.labeler.iu import load_iu_reports
    from schemas.events import Observation

    try:
        reports = load_iu_reports()
    except FileNotFoundError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "split", *(o.value for o in Observation)])
        for report in tqdm(reports, desc="labeling IU reports", unit="report", disable=not progress):
            labels = label_report(report.text)
            writer.writerow(
                [report.uid, split_of(report.uid), *(CHEXPERT_CODE[labels[o]] if o in labels else "" for o in Observation)]
            )
    typer.echo(f"wrote {len(reports)} rows to {out}")
