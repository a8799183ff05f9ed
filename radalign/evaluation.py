"""`radalign eval`: the concept model's figures (`eval concepts`, in `radalign.concepts_training.evaluate`)
and the drafts' (`eval reports`, in `radalign.drafting.evaluate`), in one command group."""

from __future__ import annotations

from typing import Annotated

import typer

from radalign.concepts_training.evaluate import eval_app

__all__ = ["eval_app"]


@eval_app.command("reports")
def eval_reports(
    sets: Annotated[list[str] | None, typer.Option("--set", help="iu and/or nih-cxr800 (repeatable; default both)")] = None,
    mode: Annotated[list[str] | None, typer.Option(help="oracle, predicted, labels-only (repeatable; default all that apply)")] = None,
    split: Annotated[str, typer.Option(help="IU half: heldout (the figures) or dev; with --manifest: all, or train / val / test of --site's split")] = "heldout",
    data_dir: Annotated[str, typer.Option(help="folder holding nih-cxr800")] = "../shared/data",
    out: Annotated[str, typer.Option(help="where reports_eval.{json,txt,png} go")] = ".radalign/eval",
    limit: Annotated[int | None, typer.Option(help="only the first N studies of each set (smoke runs)")] = None,
    meteor: Annotated[bool, typer.Option(help="METEOR too (needs Java)")] = True,
    borrow_normal_phrasing: Annotated[bool, typer.Option(help="let normal sections borrow sanitised retrieved sentences")] = False,
    manifest: Annotated[str | None, typer.Option(help="films + labels (concept-manifest CSV): through the served model and drafter, scored against its labels")] = None,
    site: Annotated[str | None, typer.Option(help="with --manifest: the films are this site's (its site model serves them)")] = None,
    json_out: Annotated[str | None, typer.Option(help="with --manifest: write the figures as JSON")] = None,
) -> None:
    """Drafts against reference reports / labels beside the normal template and the top-1 retrieved report.

    With --manifest (split: all, or with --site the site model's own train / val / test), the
    manifest's films go through the served model and the drafter."""
    from pathlib import Path

    from radalign.drafting.evaluate import format_table, run

    if manifest:
        from radalign.config import get_settings
        from radalign.drafting.evaluate_films import evaluate_manifest, format_report
        from radalign.figures import write_figures
        from radalign.pseudonymizer import IssuerPolicy

        settings = get_settings()
        issuer = IssuerPolicy.from_settings(settings).issuer_of_site(site) if site else None  # the site's archive namespace
        result = evaluate_manifest(manifest, split="all" if split == "heldout" else split, site=site, sites_dir=settings.sites_dir,
                                   secret=settings.deid_secret, issuer=issuer)  # fmt: skip
        typer.echo(format_report(result))
        if json_out:
            typer.echo(f"JSON: {write_figures(result, json_out)}")
        return

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
