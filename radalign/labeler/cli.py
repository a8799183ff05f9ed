"""`radalign label ...`: label a report text, or every IU report to a CSV file (the lead mounts `label_app`)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated

import typer

from schemas.events import Certainty, Observation

label_app = typer.Typer(no_args_is_help=True, help="Rule-based CheXpert labels of report text.")

#: CheXpert's numeric encoding in the CSV: 1 positive, 0 negative, -1 uncertain, blank unmentioned.
CHEXPERT_CODE: dict[Certainty, str] = {Certainty.PRESENT: "1", Certainty.ABSENT: "0", Certainty.UNCERTAIN: "-1"}


@label_app.command("text")
def label_text(
    text: Annotated[str, typer.Argument(help="report text (FINDINGS and/or IMPRESSION)")],
    mentions: Annotated[bool, typer.Option("--mentions", help="also print each mention and its certainty")] = False,
) -> None:
    """Print the CheXpert labels of one report text."""
    from radalign.labeler.engine import find_mentions, aggregate_mentions

    found = find_mentions(text)
    for observation, certainty in aggregate_mentions(found).items():
        typer.echo(f"{observation.value}: {certainty.value}")
    if mentions:
        for m in found:
            typer.echo(f"  [{m.sentence_index}] {m.observation.value} {m.certainty.value}: {m.phrase!r} {m.span}")


@label_app.command("iu")
def label_iu(
    out: Annotated[Path, typer.Option("--out", help="CSV file to write (uid, split, the 14 observations)")],
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Label every IU report (from the torchxrayvision wheel) into a CheXpert-style CSV."""
    from tqdm import tqdm

    from radalign.labeler.engine import label_report
    from radalign.labeler.evaluate import split_of
    from radalign.labeler.iu import load_iu_reports

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
