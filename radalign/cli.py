"""`radalign`: the single entry point (stack, workers, demo, and the domain commands)."""

from __future__ import annotations

import importlib
import os
from typing import Annotated

import typer

from schemas.topics import STAGES

app = typer.Typer(no_args_is_help=True, add_completion=False, help="RadAlign Stream: chest X-ray report drafting on Kafka, Triton and pgvector.")
schemas_app = typer.Typer(no_args_is_help=True, help="Event contracts (JSON Schema files in schemas/json).")
app.add_typer(schemas_app, name="schemas")


def _mount(module: str, attr: str, name: str, help_text: str) -> None:
    sub = getattr(importlib.import_module(module), attr)
    app.add_typer(sub, name=name, help=help_text)


_mount("radalign.stack.cli", "stack_app", "stack", "The embedded stack: broker, PostgreSQL, Triton and the stage workers.")
_mount("radalign.labeler.cli", "label_app", "label", "The CheXpert-style report labeler.")
_mount("radalign.deploy", "deploy_app", "k8s", "Generated Kubernetes manifests: render or check them.")
_mount("radalign.kb.cli", "kb_app", "kb", "The case store (pgvector): ingest reports, statistics.")
_mount("radalign.concepts.train", "train_app", "train", "Train the concept-aligned model.")
_mount("radalign.concepts.evaluate", "eval_app", "eval", "Evaluate the concept model (per-observation AUC, ROC plot).")


_eval_app = importlib.import_module("radalign.concepts.evaluate").eval_app


@_eval_app.command("reports")
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


@app.command()
def worker(stage: Annotated[str, typer.Argument(help=f"one of: {', '.join(STAGES)}")]) -> None:
    """Run one stage's worker in the foreground (what each Kubernetes Deployment runs)."""
    if stage not in STAGES:
        raise typer.BadParameter(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    from radalign.config import get_settings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    importlib.import_module(f"services.{stage}.agent").main(get_settings())


@app.command()
def demo(
    keep_running: Annotated[bool, typer.Option(help="leave the stack up afterwards")] = False,
    timeout_s: Annotated[float, typer.Option(help="how long to wait for the reports")] = 300.0,
) -> None:
    """Bring the stack up, send the sample studies, wait for the drafted reports and print them."""
    from radalign.demo import run_demo

    raise typer.Exit(run_demo(keep_running=keep_running, timeout_s=timeout_s))


dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters: what a stage could not process, and replaying it.")
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("show")
def dlq_show(stage: Annotated[str, typer.Argument(help=f"one of: {', '.join(STAGES)}")]) -> None:
    """List a stage's dead letters (offset, error type, reason, study key, time)."""
    import asyncio

    from rich.console import Console
    from rich.table import Table

    from radalign.config import get_settings
    from radalign.framework.deadletters import list_dead_letters

    table = Table(title=f"dead letters of {stage}")
    for column in ("offset", "error", "reason", "key", "failed at"):
        table.add_column(column)
    for r in asyncio.run(list_dead_letters(get_settings(), stage)):
        table.add_row(str(r.offset), r.letter.error_type, r.letter.reason[:120], r.letter.key or "-", r.letter.failed_at.isoformat(timespec="seconds"))
    Console().print(table)


@dlq_app.command("replay")
def dlq_replay(
    stage: Annotated[str, typer.Argument(help=f"one of: {', '.join(STAGES)}")],
    error_type: Annotated[list[str] | None, typer.Option(help="only these error types (e.g. dependency); repeatable")] = None,
) -> None:
    """Re-publish the stage's dead letters not replayed before to the topics they came from."""
    import asyncio

    from radalign.config import get_settings
    from radalign.framework.deadletters import replay_dead_letters

    replayed = asyncio.run(replay_dead_letters(get_settings(), stage, set(error_type) if error_type else None))
    typer.echo(f"replayed {len(replayed)} record(s) of {stage}")


@schemas_app.command("export")
def schemas_export() -> None:
    """Regenerate schemas/json/*.v1.json from the contract models."""
    from schemas.export import export

    for path in export():
        typer.echo(path)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover - `python -m radalign.cli`
    app()
