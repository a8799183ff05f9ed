"""`radalign sites ...`: a site's archive to a training set, a site model trained and measured on
its own held-out patients, shadow, promotion and rollback (recorded: who, when, figures)."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from radalign.config import Settings
    from radalign.sites.trainset import TrainingSet

sites_app = typer.Typer(help="Site models: learn each provider's films from its own archive.", no_args_is_help=True)
Site = Annotated[str, typer.Argument(help="the site's name (its configured issuer's site name, e.g. nih-cxr800)")]
By = Annotated[str, typer.Option(help="who does it (recorded; default: the login running the command)")]
#: The login running the command: the default author of what the registry records.
USER = getpass.getuser()


def _settings() -> Settings:
    from radalign.config import get_settings

    return get_settings()


@sites_app.command("archive")
def archive(
    site: Site,
    manifest: Annotated[Path | None, typer.Option(help="CSV: image, patient_id, study_id, report (or findings/impression), view, age, optional label columns")] = None,
    dicom: Annotated[Path | None, typer.Option(help="a folder of DICOM objects (with --reports)")] = None,
    reports: Annotated[Path | None, typer.Option(help="CSV: accession or study_uid, report (for --dicom)")] = None,
    issuer: Annotated[str | None, typer.Option(help="the patient-id issuer of the archive (default: the issuer configured for the site in RADALIGN_PATIENT_ISSUERS)")] = None,
    signed: Annotated[bool, typer.Option(help="add the site's reports signed in review (the signed labels, the film the model read)")] = False,
) -> None:
    """Add the archive's new studies to the site's training set (de-identified, labelled, versioned)."""
    from radalign.pseudonymizer import IssuerPolicy, Pseudonymizer
    from radalign.sites.trainset import TrainingSet, build_from_dicom, build_from_manifest

    settings = _settings()
    trainset = TrainingSet(settings.sites_dir, site)
    pseudonyms = Pseudonymizer(settings.deid_secret)
    issuer = issuer or IssuerPolicy.from_settings(settings).issuer_of_site(site)  # the live studies' namespace
    if signed:
        import asyncio

        path, added = asyncio.run(add_signed(settings, trainset))
    elif manifest is not None:
        path, added = build_from_manifest(manifest, trainset, pseudonyms, issuer)
    elif dicom is not None and reports is not None:
        path, added = build_from_dicom(dicom, reports, trainset, pseudonyms, issuer)
    else:
        raise typer.BadParameter("give --manifest, or --dicom with --reports")
    typer.echo(f"{site}: {added} new studies; training set {path}")


async def add_signed(settings: Settings, trainset: TrainingSet) -> tuple[Path | None, int]:
    """The site's signed studies not yet in its training set, with their films from the blob store."""
    from radalign.blobstore import open_blob_store
    from radalign.db import open_pool
    from radalign.ingest.images import decode_npy
    from radalign.sites.shadow import signed_studies
    from radalign.sites.trainset import model_input_png, signed_rows
    from schemas.events import BlobRef

    known = {r["study_key"] for r in trainset.rows()}
    blobs = open_blob_store(settings.blob_root, settings.s3_endpoint_url)
    pool = await open_pool(settings, name="radalign-sites")
    try:
        studies = [s for s in await signed_studies(pool, trainset.site) if s["study_key"] not in known]
    finally:
        await pool.close()
    items = []
    for study in studies:
        ref = BlobRef.model_validate(study["model_input"])
        png = model_input_png(decode_npy(blobs.get(ref)), trainset.folder / "images" / f"{study['study_key']}.png")
        items.append({"image": png, "patient_key": study["patient_key"], "study_key": study["study_key"], "view": study["view_position"],
                      "labels": study["labels"]})
    return trainset.add(signed_rows(items))


@sites_app.command("compare")
def compare(site: Site, candidate: Annotated[str | None, typer.Argument(help="default: the site's shadow candidate")] = None) -> None:
    """The shadow candidate against the live model on live traffic: agreement per observation, OOD
    and nothing-claimed rates, and AUC against the reports signed meanwhile."""
    import asyncio
    import json

    from radalign.db import open_pool
    from radalign.sites.registry import SiteRegistry
    from radalign.sites.shadow import compare as compare_shadow

    settings = _settings()
    version = candidate or SiteRegistry(settings.sites_dir).state(site).shadow
    if not version:
        raise typer.BadParameter(f"site {site!r} has no candidate in shadow")

    async def run() -> dict:
        pool = await open_pool(settings, name="radalign-sites")
        try:
            return await compare_shadow(pool, site, version)
        finally:
            await pool.close()

    typer.echo(json.dumps(asyncio.run(run()), indent=2))


@sites_app.command("retrain")
def retrain(
    site: Site,
    min_signed: Annotated[int, typer.Option(help="signed reports since the last training that make a new candidate due")] = 200,
    max_age_days: Annotated[int, typer.Option(help="age of the live model that makes a new candidate due")] = 90,
    reference: Annotated[Path | None, typer.Option(help="as for train")] = None,
    by: By = "retrain-trigger",
) -> None:
    """The retrain trigger (a CronJob runs it): when due, add the signed reports and train the next candidate into shadow."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from radalign.sites.registry import SiteRegistry
    from radalign.sites.shadow import retrain_due
    from radalign.sites.trainset import TrainingSet

    settings = _settings()
    registry, trainset = SiteRegistry(settings.sites_dir), TrainingSet(settings.sites_dir, site)
    path, added = asyncio.run(add_signed(settings, trainset))
    live = registry.state(site).live
    card = registry.card(site, live) if live else {}
    trained_at = card.get("trained_at")
    signed_new = sum(r["origin"] == "signed" for r in trainset.rows()) - int(card.get("signed_rows", 0))
    reason = retrain_due(signed_new, datetime.fromisoformat(trained_at) if trained_at else None, min_signed=min_signed,
                         max_age=timedelta(days=max_age_days), now=datetime.now(UTC))
    typer.echo(f"{site}: {added} signed reports added; {reason or 'no new candidate due'}")
    if reason and path is not None:
        train(site, cache_dir=settings.state_dir / "cache" / "concepts", shadow=True, reference=reference, generic_manifest=None, by=by)


@sites_app.command("train")
def train(
    site: Site,
    cache_dir: Path = Path(".radalign/cache/concepts"),
    shadow: Annotated[bool, typer.Option(help="register the candidate in shadow on live traffic")] = True,
    reference: Annotated[Path | None, typer.Option(help="a manifest (with a source column) of films from elsewhere; rows of this site are skipped")] = None,
    generic_manifest: Annotated[Path | None, typer.Option(help="the generic model's training manifest: its train/val films leave the comparison")] = None,
    by: By = USER,
) -> None:
    """Train a candidate on the latest training set; prints its model card; puts it in shadow."""
    from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT
    from radalign.sites.registry import SiteRegistry
    from radalign.sites.train import card_markdown, generic_seen_images, reference_records, train_site
    from radalign.sites.trainset import TrainingSet

    settings = _settings()
    latest = TrainingSet(settings.sites_dir, site).latest()
    if latest is None:
        raise typer.BadParameter(f"site {site!r} has no training set: run `radalign sites archive {site} ...` first")
    registry = SiteRegistry(settings.sites_dir)
    seen = generic_seen_images(DEFAULT_CHECKPOINT, generic_manifest) if generic_manifest else frozenset()
    model = train_site(site, latest, registry.heads_dir(site), cache_dir=cache_dir, reference=reference_records(reference, site), generic_seen=seen)
    typer.echo(card_markdown(model.card))
    if shadow:
        registry.add_candidate(site, model.path, by)
        typer.echo(f"{model.version} runs in shadow for {site}; compare, then `radalign sites promote {site}`")


@sites_app.command("promote")
def promote(site: Site, version: Annotated[str | None, typer.Argument(help="default: the shadow candidate")] = None, by: By = USER) -> None:
    """Serve a candidate for the site (refused unless it passed its gate); Triton picks it up without a restart."""
    from radalign.sites.registry import PromotionRefused, SiteRegistry

    try:
        state = SiteRegistry(_settings().sites_dir).promote(site, version, by)
    except (PromotionRefused, FileNotFoundError) as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{site}: live {state.live}")


@sites_app.command("rollback")
def rollback(site: Site, by: By = USER) -> None:
    """Back to the model the last promotion replaced (the generic model if none)."""
    from radalign.sites.registry import PromotionRefused, SiteRegistry

    try:
        state = SiteRegistry(_settings().sites_dir).rollback(site, by)
    except PromotionRefused as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{site}: live {state.live or 'generic model'}")


@sites_app.command("list")
def list_sites() -> None:
    """Each site's live and shadow model and its recorded history."""
    from radalign.sites.registry import SiteRegistry, seeded_registry

    registry = SiteRegistry(seeded_registry(_settings().sites_dir))
    for site in registry.sites():
        state = registry.state(site)
        typer.echo(f"{site}: live {state.live or '-'}, shadow {state.shadow or '-'}")
        for event in state.events:
            figures = event.get("figures", {}).get("test_auc", {})
            auc = ", ".join(f"{k} {v:.3f}" for k, v in figures.items() if v is not None)
            typer.echo(f"  {event['at']} {event['action']:<9} {event.get('version') or 'generic'} by {event['by']}{'  test AUC ' + auc if auc else ''}")


@sites_app.command("macro")
def macro(site: Site, findings: Annotated[str, typer.Option()], impression: Annotated[str, typer.Option()]) -> None:
    """Set the site's normal report: the draft of a film its model calls likely-normal."""
    from radalign.sites.macros import NormalMacro, save_normal_macro

    typer.echo(f"written: {save_normal_macro(_settings().sites_dir, site, NormalMacro(findings.strip(), impression.strip()))} (drafting reads it at start)")
