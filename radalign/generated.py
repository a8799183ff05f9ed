"""Files the code generates and the repository commits (Kubernetes manifests, conformance
documents): write them, find the stale ones, and the `render` / `check` command pair, in one place."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import typer


def stale(rendered: Mapping[str, str], root: Path) -> list[str]:
    """Relative paths under `root` that are missing or differ from what the code renders now."""
    return [rel for rel, text in rendered.items() if not (root / rel).is_file() or (root / rel).read_text(encoding="utf-8") != text]


def write(rendered: Mapping[str, str], root: Path) -> list[Path]:
    """Write every rendered file under `root` (folders created); returns the paths."""
    written = []
    for rel, text in rendered.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def generated_files_app(help_text: str, render_all: Callable[[], Mapping[str, str]], root: Callable[[], Path], render_cmd: str) -> typer.Typer:
    """`render` rewrites the files, `check` exits 1 naming each stale one (`root` is read at each
    call, so a test may point it elsewhere)."""
    app = typer.Typer(no_args_is_help=True, help=help_text)

    @app.command("render")
    def render_command() -> None:
        """Rewrite the generated files."""
        for path in write(render_all(), root()):
            typer.echo(path.relative_to(root()).as_posix())

    @app.command("check")
    def check_command() -> None:
        """Exit 1 when a committed file differs from what the code gives."""
        outdated = stale(render_all(), root())
        for rel in outdated:
            typer.echo(f"stale: {rel} (run `{render_cmd}`)", err=True)
        raise typer.Exit(1 if outdated else 0)

    return app
