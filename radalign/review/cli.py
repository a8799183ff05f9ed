"""`radalign review export-manifest FILE` (the review service itself is a stage of the graph:
`radalign worker review`, started by `radalign stack up`; agreement figures are on its pages)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

review_app = typer.Typer(no_args_is_help=True, help="The radiologist's side: worklist, sign-off, learning loop.")


@review_app.callback()
def _review_group() -> None:
    """Keeps `review` a group: typer collapses a Typer with a single command and no callback into
    that command, so `radalign review export-manifest FILE` failed ("unexpected extra argument")."""


@review_app.command("export-manifest")
def export_manifest(
    out_csv: Annotated[Path, typer.Argument(help="CSV to write; PNGs go to <stem>_images/ beside it")],
    all_signed: Annotated[bool, typer.Option("--all", help="every signed study, not only those that differ from the draft")] = False,
) -> None:
    """Signed reports whose labels differ from the drafted concepts, as a `radalign train` manifest."""
    import asyncio

    from radalign.blobstore import open_blob_store
    from radalign.config import get_settings
    from radalign.review.manifest import write_manifest
    from radalign.review.store import read_signed_rows

    settings = get_settings()
    rows = asyncio.run(read_signed_rows(settings, "review-export"))
    blobs = open_blob_store(settings.blob_root, settings.s3_endpoint_url)
    summary = write_manifest(rows, out_csv, blobs.get, only_differences=not all_signed)
    typer.echo(
        f"{out_csv}: {summary.written} rows from {summary.signed} signed studies "
        f"({summary.agreeing} agreed with the draft, {summary.without_image} had no recorded image)"
    )
