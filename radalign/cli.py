"""`radalign`: the single entry point (stack, workers, demo, and the domain commands)."""

from __future__ import annotations

import importlib
import os
from typing import Annotated, ClassVar

import click
import typer
from typer.core import TyperGroup

from radalign.pipeline import STAGES, stage_spec


class _LazyGroup(TyperGroup):
    """Sub-command groups imported only when they run, so `radalign --help` or `radalign label
    FILE` does not pay for torch, sklearn or the stack (the CLI started in ~9 s when it imported
    them all up front). Help listings use the registered help texts without importing."""

    lazy: ClassVar[dict[str, tuple[str, str, str]]] = {}  # name -> (module, attribute, help)
    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:  # type: ignore[override]  # typer vendors click: its TyperGroup uses typer._click types, not click's
        return [*super().list_commands(ctx), *(n for n in self.lazy if n not in self.commands)]  # type: ignore[arg-type]  # typer vendors click: its TyperGroup uses typer._click types, not click's

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:  # type: ignore[override]  # typer vendors click: its TyperGroup uses typer._click types, not click's
        if cmd_name not in self.lazy or cmd_name in self.commands:
            return super().get_command(ctx, cmd_name)  # type: ignore[arg-type, return-value]  # typer vendors click: its TyperGroup uses typer._click types, not click's
        module, attr, help_text = self.lazy[cmd_name]
        if self._listing:
            return click.Group(name=cmd_name, help=help_text, short_help=help_text)
        command = typer.main.get_command(getattr(importlib.import_module(module), attr))
        command.name, command.help = cmd_name, help_text
        return command  # type: ignore[return-value]  # typer vendors click: its TyperGroup uses typer._click types, not click's

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:  # type: ignore[override]  # typer vendors click: its TyperGroup uses typer._click types, not click's
        self._listing = True
        try:
            super().format_help(ctx, formatter)  # type: ignore[arg-type]  # typer vendors click: its TyperGroup uses typer._click types, not click's
        finally:
            self._listing = False


app = typer.Typer(
    cls=_LazyGroup, no_args_is_help=True, add_completion=False,
    help="RadAlign Stream: chest X-ray report drafting on Kafka, Triton and pgvector.",
)
schemas_app = typer.Typer(no_args_is_help=True, help="Event contracts (JSON Schema files in schemas/json).")
app.add_typer(schemas_app, name="schemas")


#: The lazily imported command groups (see `_LazyGroup`), one row each: name -> (module, Typer
#: attribute, help).
_LAZY_GROUPS: dict[str, tuple[str, str, str]] = {
    "stack": ("radalign.stack.cli", "stack_app", "The embedded stack: broker, PostgreSQL, Triton and the stage workers."),
    "label": ("radalign.labeler.cli", "label_app", "The CheXpert-style report labeler: radalign label FILE|text|iu."),
    "k8s": ("radalign.deploy", "deploy_app", "Generated Kubernetes manifests: render or check them."),
    "kb": ("radalign.kb.cli", "kb_app", "The case store (pgvector): ingest reports, statistics."),
    "train": ("radalign.concepts_training.train", "train_app", "Train the concept-aligned model."),
    "eval": ("radalign.evaluation", "eval_app", "Evaluate the concept model (eval concepts) and the drafts (eval reports)."),
    "sites": ("radalign.sites.cli", "sites_app", "Site models: archive, train, shadow, promote, rollback."),
    "audit": ("radalign.concepts_training.audit", "audit_app", "Audit the served concept model on a site's labelled films and write its site profile."),
    "delivery": ("radalign.delivery.check", "delivery_app", "Delivery destinations (PACS, DICOMweb, FHIR, HL7): check them."),
    "conformance": ("services.conformance", "conformance_app", "Conformance documents (OpenAPI, AsyncAPI, DICOM, FHIR) under docs/: render or check them."),
    "review": ("radalign.review.cli", "review_app", "The radiologist's side: review web app, sign-off, training manifest of corrections."),
    "bench": ("radalign.bench.cli", "bench_app", "One benchmark run: the pipeline to delivered report, each stage alone, STAT under a backlog."),
}
_LazyGroup.lazy.update(_LAZY_GROUPS)


@app.command()
def worker(stage: Annotated[str, typer.Argument(help=f"one of: {', '.join(STAGES)}")]) -> None:
    """Run one stage's worker in the foreground (what each Kubernetes Deployment runs)."""
    try:
        spec = stage_spec(stage)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    from radalign.config import get_settings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    importlib.import_module(spec.adapter).main(get_settings())


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
    from radalign.framework.deadletters import handled_offsets, list_dead_letters

    settings = get_settings()
    table = Table(title=f"dead letters of {stage}")
    for column in ("offset", "error", "reason", "key", "failed at", "replay"):
        table.add_column(column)
    try:
        handled = asyncio.run(handled_offsets(settings, stage))
    except Exception:  # noqa: BLE001 - the letters are still worth showing without the database
        handled = {}
    for r in asyncio.run(list_dead_letters(settings, stage)):
        table.add_row(str(r.offset), r.letter.error_type, r.letter.reason[:120], r.letter.key or "-",
                      r.letter.failed_at.isoformat(timespec="seconds"), handled.get(r.offset, "pending"))
    Console().print(table)


@dlq_app.command("replay")
def dlq_replay(
    stage: Annotated[str, typer.Argument(help=f"one of: {', '.join(STAGES)}")],
    error_type: Annotated[list[str] | None, typer.Option(help="only these error types (e.g. dependency); repeatable")] = None,
    max_replays: Annotated[int, typer.Option(help="replay one payload at most this many times in all (poison records)")] = 3,
) -> None:
    """Re-publish the stage's pending dead letters to the topics they came from."""
    import asyncio

    from radalign.config import get_settings
    from radalign.framework.deadletters import replay_dead_letters

    report = asyncio.run(replay_dead_letters(get_settings(), stage, set(error_type) if error_type else None, max_replays=max_replays))
    typer.echo(
        f"{stage}: replayed {len(report.replayed)}, gave up on {len(report.exhausted)} (replayed {max_replays} times already), "
        f"left {len(report.left)} of other error types pending, {report.already} handled before"
    )


outbox_app = typer.Typer(no_args_is_help=True, help="The gateway outbox: studies acknowledged and not yet published.")
app.add_typer(outbox_app, name="outbox")


@outbox_app.command("status")
def outbox_status() -> None:
    """Pending studies, the oldest one's age, and those whose publish keeps failing."""
    from radalign.config import get_settings
    from radalign.db import connect

    settings = get_settings()
    with connect(settings.dsn, settings=settings) as conn:
        counts = conn.execute(
            "SELECT count(*), extract(epoch FROM now() - min(last_received_at)) FROM gateway_outbox_studies WHERE pending"
        ).fetchone()
        assert counts is not None  # an aggregate without GROUP BY returns exactly one row
        pending, oldest = counts
        failing = conn.execute(
            "SELECT study_key, attempts, last_error FROM gateway_outbox_studies WHERE pending AND attempts > 0 ORDER BY attempts DESC LIMIT 20"
        ).fetchall()
    typer.echo(f"pending studies: {pending}" + (f" (oldest received {oldest:.0f} s ago)" if pending else ""))
    for study_key, attempts, error in failing:
        typer.echo(f"  {study_key}: {attempts} failed publish attempts, last: {error}")


@outbox_app.command("requeue-unreported")
def outbox_requeue_unreported(
    window_h: Annotated[float, typer.Option(help="studies received within this many hours")] = 24.0,
) -> None:
    """Publish again every study of the window that has no report yet, or (where delivery is
    configured) whose report never reached the delivery stage (after a broker lost data)."""
    from radalign.config import get_settings
    from radalign.db import connect
    from radalign.ingest.outbox import requeue_unreported

    settings = get_settings()
    with connect(settings.dsn, settings=settings, autocommit=True) as conn:
        count = requeue_unreported(conn, window_h * 3600, delivering=bool(settings.delivery_destinations.strip()))
    typer.echo(f"re-queued {count} published but unreported studies; the gateway publishes them on its next tick")


@schemas_app.command("export")
def schemas_export() -> None:
    """Regenerate schemas/json/*.v1.json from the contract models."""
    from radalign.schemas_export import export

    for path in export():
        typer.echo(path)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover - `python -m radalign.cli`
    app()
