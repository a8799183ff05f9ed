"""`radalign kb ...`: fill and inspect the case store (typer sub-app `kb_app`, mounted by the CLI)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated

import typer

kb_app = typer.Typer(help="Case store (pgvector): ingest reports, show statistics.", no_args_is_help=True)
ingest_app = typer.Typer(help="Label, embed and upsert a corpus of reports (idempotent).", no_args_is_help=True)
kb_app.add_typer(ingest_app, name="ingest")

Dsn = Annotated[str | None, typer.Option(help="PostgreSQL DSN (default: settings' RADALIGN_DATABASE_URL or the embedded server)")]
Limit = Annotated[int | None, typer.Option(help="ingest only the first N reports")]
BatchSize = Annotated[int, typer.Option(help="reports embedded and upserted per transaction")]
Migrate = Annotated[bool, typer.Option(help="apply pending migrations first")]
Progress = Annotated[bool, typer.Option(help="show a progress bar")]
ExcludeCases = Annotated[
    Path | None,
    typer.Option(exists=True, dir_okay=False, help="file of case ids (one a line) to leave out, e.g. an evaluation set"),
]


def _case_ids(path: Path | None) -> set[str]:
    if path is None:
        return set()
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")}


def _settings(dsn: str | None):
    from radalign.config import get_settings

    settings = get_settings()
    return settings.model_copy(update={"database_url": dsn}) if dsn else settings


async def _run_ingest(settings, source: str, make_drafts, batch_size: int, migrate: bool, progress: bool, images: bool):
    from radalign.kb.ingest import IngestReport, default_label_fn, ingest_drafts
    from radalign.kb.store import CaseStore

    if migrate:
        from radalign.db import apply_migrations

        applied = apply_migrations(settings.dsn)
        if applied:
            typer.echo(f"applied migrations: {', '.join(applied)}")
    report = IngestReport(source)
    drafts = make_drafts(settings.deid_secret, default_label_fn(), report)
    async with await CaseStore.open(settings) as store:
        await ingest_drafts(store, drafts, batch_size=batch_size, progress=progress, report=report, with_images=images)
    return report


@ingest_app.command("iu")
def ingest_iu(
    dsn: Dsn = None,
    limit: Limit = None,
    batch_size: BatchSize = 256,
    migrate: Migrate = True,
    progress: Progress = True,
    exclude_cases: ExcludeCases = None,
) -> None:
    """The 3,955 Indiana University reports shipped in the torchxrayvision wheel (read in place).
    Each report is its own patient: patient id = its uid (CXR12), issuer IU-OPENI."""
    from radalign.kb.ingest import IU_SOURCE, iu_drafts

    settings = _settings(dsn)
    excluded = _case_ids(exclude_cases)

    def make(secret, label_fn, report):
        return iu_drafts(secret, label_fn, limit=limit, report=report, exclude_cases=excluded)

    report = asyncio.run(_run_ingest(settings, IU_SOURCE, make, batch_size, migrate, progress, images=False))
    typer.echo(report.summary())


@ingest_app.command("csv")
def ingest_csv(
    path: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV: case_id, patient_id, findings, impression[, image_path, issuer]")
    ],
    source: Annotated[str, typer.Option(help="corpus name stored with each case")] = "provider",
    issuer: Annotated[
        str | None,
        typer.Option(help="issuer (namespace) of the patient ids, as the gateway sees them; default RADALIGN_PATIENT_ISSUER"),
    ] = None,
    exclude_cases: ExcludeCases = None,
    dsn: Dsn = None,
    limit: Limit = None,
    batch_size: BatchSize = 256,
    migrate: Migrate = True,
    progress: Progress = True,
    images: Annotated[bool, typer.Option(help="embed each row's image_path (PNG/JPEG) with the shipped concept model")] = True,
) -> None:
    """A provider's reports. Case and patient ids are pseudonymised with RADALIGN_DEID_SECRET; a
    patient's key is that of `radalign.pseudonymizer` for (issuer, patient_id), the gateway's too."""
    from radalign.kb.ingest import IngestError, csv_drafts

    settings = _settings(dsn)
    excluded = _case_ids(exclude_cases)

    def make(secret, label_fn, report):
        return csv_drafts(
            path, source, secret, label_fn, issuer=issuer or settings.patient_issuer, limit=limit, report=report,
            exclude_cases=excluded,
        )

    try:
        report = asyncio.run(_run_ingest(settings, source, make, batch_size, migrate, progress, images=images))
    except IngestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(report.summary())


@kb_app.command("stats")
def stats(
    dsn: Dsn = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Cases per corpus, image embeddings, patients and per-observation prevalence."""
    from dataclasses import asdict

    from radalign.kb.store import CaseStore

    settings = _settings(dsn)

    async def run():
        async with await CaseStore.open(settings) as store:
            return await store.stats()

    result = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(asdict(result), indent=2))
        return
    typer.echo(f"cases: {result.total}  patients: {result.patients}  with image embedding: {result.with_image_embedding}")
    for source, n in result.by_source.items():
        typer.echo(f"  {source}: {n}")
    typer.echo("labelled present:")
    for observation, n in result.present_counts.items():
        typer.echo(f"  {observation:<28} {n:>6}  ({n / max(result.total, 1):.1%})")


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.INFO)
    kb_app()
