"""`radalign eval`: the concept model's figures (`eval concepts`: `radalign.concepts_training.evaluate`,
or a site's model: `radalign.sites.evaluate`) and the drafts' (`eval reports`: `radalign.drafting.evaluate`),
in one command group. The group sits here, above the packages it calls, so that no training or
drafting module imports the site models to offer a command-line option."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT
from radalign.concepts_training.evaluate import evaluate

__all__ = ["eval_app"]

eval_app = typer.Typer(help="Evaluate models.", no_args_is_help=True)


@eval_app.callback()
def _eval_group() -> None:
    """Evaluate models (a group, so that `radalign eval concepts` keeps its sub-command name)."""


@eval_app.command("concepts")
def eval_concepts_cmd(
    manifest: Annotated[Path, typer.Argument(help="the manifest the checkpoint was trained on")],
    checkpoint: Annotated[Path, typer.Option(help="checkpoint to evaluate")] = DEFAULT_CHECKPOINT,
    split: Annotated[str, typer.Option(help="test / val / train of the checkpoint's split, or all (any manifest as an external test set)")] = "test",
    cache_dir: Path = Path(".radalign/cache/concepts"),
    n_boot: int = 1000,
    roc_png: Annotated[Path | None, typer.Option(help="where to write the ROC curves")] = Path(".radalign/reports/concepts_roc.png"),
    reliability_png: Annotated[Path | None, typer.Option(help="where to write the reliability plot")] = Path(".radalign/reports/concepts_reliability.png"),
    json_out: Annotated[Path | None, typer.Option(help="also write the figures as JSON")] = None,
    site: Annotated[str | None, typer.Option(help="evaluate the model that serves this site (its promoted site model); split: all, or the site's own")] = None,
) -> None:
    """Per-observation AUC with bootstrap 95% CIs (overall, within each source), the source-identity
    baseline, confounding check, calibration, operating points, OOD rate and the LOSO table."""
    if site:
        from radalign.config import get_settings
        from radalign.figures import write_figures
        from radalign.sites.evaluate import evaluate_site, format_site_report

        settings = get_settings()
        from radalign.pseudonymizer import IssuerPolicy

        figures = evaluate_site(manifest, site, sites_dir=settings.sites_dir, split=split, secret=settings.deid_secret, cache_dir=cache_dir,
                                checkpoint=checkpoint, n_boot=n_boot, issuer=IssuerPolicy.from_settings(settings).issuer_of_site(site))
        typer.echo(format_site_report(figures))
        if json_out:
            typer.echo(f"JSON: {write_figures(figures, json_out)}")
        return
    report = evaluate(checkpoint, manifest, split=split, cache_dir=cache_dir, n_boot=n_boot, roc_png=roc_png, reliability_png=reliability_png)
    typer.echo(f"{report.split} split: {report.images} images, {report.patients} patients, model {report.model_version}")
    typer.echo(report.table())
    if report.roc_png:
        typer.echo(f"ROC curves: {report.roc_png}")
    if report.reliability_png:
        typer.echo(f"reliability plot: {report.reliability_png}")
    if json_out:
        data = asdict(report) | {"rows": [asdict(r) | {"observation": r.observation.value} for r in report.rows], "roc_png": str(report.roc_png),
                                 "reliability_png": str(report.reliability_png)}
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(data, indent=2, default=str))


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
                                   secret=settings.deid_secret, issuer=issuer)
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
