"""`radalign stack up|down|status` (the lead mounts `stack_app` in radalign/cli.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from radalign.config import get_settings
from radalign.stack.manager import COMPONENTS, SERVICES, ComponentStatus, down, status, up
from radalign.stack.readiness import StackStartError

stack_app = typer.Typer(help="The embedded dev/CI stack: broker, PostgreSQL, Triton, workers.", no_args_is_help=True)
console = Console()


def _table(rows: list[ComponentStatus], title: str) -> Table:
    table = Table(title=title)
    for column in ("component", "pid", "address", "health", "detail"):
        table.add_column(column)
    for row in rows:
        health = "[green]healthy[/green]" if row.healthy else "[red]down[/red]"
        detail = row.detail + (f" in {row.started_in_s:.2f} s" if row.started_in_s is not None else "")
        table.add_row(row.name, str(row.pid or "-"), row.address, health, detail)
    return table


@stack_app.command("up")
def up_command(
    no_workers: Annotated[bool, typer.Option("--no-workers", help="start the services only")] = False,
    model_repo: Annotated[
        Path | None, typer.Option("--model-repo", help="Triton model repository (default: triton_models/)")
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help=f"start only these components ({', '.join(COMPONENTS)})")
    ] = None,
    supervise: Annotated[
        bool, typer.Option("--supervise/--no-supervise", help="restart crashed components with backoff")
    ] = True,
) -> None:
    """Start what is not running yet and wait until each is ready."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness poll otherwise
    settings = get_settings()
    components = list(only or COMPONENTS)
    if no_workers:
        components = [c for c in components if c in SERVICES]
    try:
        rows = up(settings, components, model_repo=model_repo, supervise=supervise)
    except (StackStartError, ValueError) as exc:
        console.print(f"[red]stack up failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(_table(rows, f"stack up ({settings.state_dir})"))


@stack_app.command("down")
def down_command() -> None:
    """Stop every process of the stack; nothing is left running."""
    settings = get_settings()
    stopped = down(settings)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("status")
def status_command() -> None:
    """One row per component; exits 1 when one is not healthy."""
    settings = get_settings()
    rows = status(settings)
    console.print(_table(rows, f"stack status ({settings.state_dir})"))
    if not all(row.healthy for row in rows):
        raise typer.Exit(1)
