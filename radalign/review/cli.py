"""`radalign review serve | export-manifest | agreement`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

review_app = typer.Typer(no_args_is_help=True, help="The radiologist's side: worklist, sign-off, learning loop.")


@review_app.command("serve")
def serve(
    detach: Annotated[bool, typer.Option(help="run as a stack process (PID and log under the state folder; `stack down` stops it)")] = False,
) -> None:
    """Run the review web app (http://127.0.0.1:18106) with its preprocessed-topic consumer."""
    import os

    from radalign.config import get_settings

    settings = get_settings()
    if detach:
        import sys
        import time

        import httpx

        from radalign.stack.process import StatePaths, start_process
        from radalign.stack.workers import settings_env

        paths = StatePaths.of(settings.state_dir)
        proc = start_process(paths, "review", [sys.executable, "-m", "radalign.cli", "review", "serve"],
                             settings_env(settings) | {"HF_HUB_OFFLINE": "1"})
        url = f"http://127.0.0.1:{settings.web_port('review')}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.is_running():
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    typer.echo(f"review serving on {url} (pid {proc.pid}, log {paths.log_file('review')})")
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        typer.echo(f"the review service did not become ready; see {paths.log_file('review')}", err=True)
        raise typer.Exit(1)
    from services.review.runner import main

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main(settings)


@review_app.command("export-manifest")
def export_manifest(
    out_csv: Annotated[Path, typer.Argument(help="CSV to write; PNGs go to <stem>_images/ beside it")],
    all_signed: Annotated[bool, typer.Option("--all", help="every signed study, not only those that differ from the draft")] = False,
) -> None:
    """Signed reports whose labels differ from the drafted concepts, as a `radalign train` manifest."""
    import asyncio

    from radalign.blobstore import open_blob_store
    from radalign.config import get_settings
    from radalign.db import open_pool
    from radalign.review.manifest import write_manifest
    from radalign.review.store import ReviewStore

    settings = get_settings()

    async def _rows():
        pool = await open_pool(settings, name="review-export")
        try:
            return await ReviewStore(pool).signed_rows()
        finally:
            await pool.close()

    rows = asyncio.run(_rows())
    blobs = open_blob_store(settings.blob_root, settings.s3_endpoint_url)
    summary = write_manifest(rows, out_csv, blobs.get, only_differences=not all_signed)
    typer.echo(
        f"{out_csv}: {summary.written} rows from {summary.signed} signed studies "
        f"({summary.agreeing} agreed with the draft, {summary.without_image} had no recorded image)"
    )
