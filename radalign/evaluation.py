"""`radalign eval`: the concept model's figures (`eval concepts`, in `radalign.concepts.evaluate`)
and the drafts' (`eval reports`, in `radalign.drafting.evaluate`), in one command group."""

from __future__ import annotations

from typing import Annotated

import typer

from radalign.concepts.evaluate import eval_app

__all__ = ["eval_app"]


@eval_app.command("reports")
def eval_reports(
    sets: Annotated[list[str] | None, typer.Option("--set", help="iu and/or nih-cxr800 (repeatable; default both)")] = None,
    mode: Annotated[list[str] | None, typer.Option(help="oracle, predicted, labels-only (repeatable; default all that apply)")] = None,
    split: Annotated[str, typer.Option(help="IU half: heldout (the figures) or dev (the half the phrase table was written on)")] = "heldout",
    data_dir: Annotated[str, typer.Option(help="folder holding nih-cxr800")] = "../shared/data",
    out: Annotated[str, typer.Option(help="where reports_eval.{json,txt,png} go")] = ".radalign/eval",
    limit: Annotated[int | None, typer.Option(help="only the first N studies of each set (smoke runs)")] = None,
    meteor: Annotated[bool, typer.Option(help="METEOR too (needs Java)")] = True,
    borrow_normal_phrasing: Annotated[bool, typer.Option(help="let normal sections borrow sanitised retrieved sentences")] = False,
) -> None:
    """Drafts against reference reports / labels beside the normal template and the top-1 retrieved report."""
    from pathlib import Path

    from radalign.drafting.evaluate import format_table, run

    if split not in ("heldout", "dev"):
        raise typer.BadParameter("split must be heldout or dev")
    unknown = sorted(set(sets or ()) - {"iu", "nih-cxr800"}) + sorted(set(mode or ()) - {"oracle", "predicted", "labels-only"})
    if unknown:
        raise typer.BadParameter(f"unknown set or mode: {', '.join(unknown)} (sets: iu, nih-cxr800; modes: oracle, predicted, labels-only)")
    evaluations = run(
        sets or ["iu", "nih-cxr800"], modes=mode or ["oracle", "predicted", "labels-only"], split=split, data_dir=Path(data_dir),
        out_dir=Path(out), limit=limit, meteor=meteor, borrow_normal_phrasing=borrow_normal_phrasing,
    )
    for evaluation in evaluations:
        typer.echo(format_table(evaluation) + "\n")
    typer.echo(f"written: {Path(out) / 'reports_eval.json'}, .txt, .png")
