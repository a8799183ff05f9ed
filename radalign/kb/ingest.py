"""Load reports into the case store: read a corpus, label, pseudonymise, embed, upsert.

Sources: the IU chest X-ray reports (read from the torchxrayvision wheel at run time, never
copied) and a provider's CSV (`case_id, patient_id, findings, impression[, image_path, issuer]`).
Patient keys come from the one pseudonymising function (`radalign.pseudonymizer`), with the issuer the
provider names (`--issuer`, or an `issuer` column per row), so they equal the gateway's keys for
the same patient and same-patient exclusion works.
Every case is labelled by the project's rule-based CheXpert labeler, so stored labels and the
drafting guard speak the same language. A CSV row's image (PNG/JPEG) is embedded with the shipped
concept model, as the review service's learning loop embeds signed studies (`embed_images`).

Idempotent and cheap to re-run: drafts whose content hash is already stored are neither
re-embedded nor rewritten.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radalign.kb.case import CaseDraft, CaseRecord
from radalign.pseudonymizer import Pseudonymizer
from schemas.events import Certainty, Observation

if TYPE_CHECKING:
    from radalign.config import Settings
    from radalign.kb.store import CaseStore

log = logging.getLogger(__name__)

IU_SOURCE = "iu-openi"
#: IU ids are the public report uids: their own namespace, never a hospital's MRNs.
IU_ISSUER = "IU-OPENI"
CSV_COLUMNS = ("case_id", "patient_id", "findings", "impression")
LabelFn = Callable[[str, str], Mapping[Observation, Certainty]]


class IngestError(ValueError):
    """The input cannot be ingested as given (missing columns, no rows)."""


@dataclass
class IngestReport:
    source: str
    read: int = 0
    skipped_empty: int = 0
    unchanged: int = 0
    embedded: int = 0
    changed: int = 0
    with_images: int = 0
    #: Rows whose image_path names no file: stored without an image embedding, and said so.
    images_missing: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # label, embed, upsert, total

    def summary(self) -> str:
        times = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        return (
            f"{self.source}: read {self.read}, skipped (empty) {self.skipped_empty}, unchanged {self.unchanged}, "
            f"embedded {self.embedded}, changed {self.changed}, with images {self.with_images}"
            + (f", image files missing {self.images_missing}" if self.images_missing else "")
            + f" ({times})"
        )


def default_label_fn() -> LabelFn:
    """The labeler with CheXpert's hierarchy (Lung Opacity lifted from its children), so stored
    case labels are complete CheXpert label sets for label-profile retrieval."""
    from functools import partial

    from radalign.labeler import label_sections

    return partial(label_sections, hierarchy=True)


# -- sources ---------------------------------------------------------------------------------


def iu_drafts(
    secret: str,
    label_fn: LabelFn,
    *,
    limit: int | None = None,
    report: IngestReport | None = None,
    exclude_cases: Collection[str] = (),
) -> list[CaseDraft]:
    """Drafts of the IU reports (ordered by uid). IU publishes no patient link (one study per
    report), so each report is its own patient: patient id = the uid, issuer `IU_ISSUER`; case
    keys keep the public uid. `exclude_cases`: uids (e.g. "CXR12") left out, for evaluation sets."""
    from radalign.labeler.iu import load_iu_reports

    excluded = {c.strip() for c in exclude_cases}
    reports = [r for r in load_iu_reports() if r.uid not in excluded]
    if limit is not None:
        reports = reports[:limit]
    rows = (
        {"case_key": f"iu-{r.uid}", "patient_id": r.uid, "issuer": IU_ISSUER, "findings": r.findings, "impression": r.impression}
        for r in reports
    )
    return _drafts(rows, IU_SOURCE, secret, label_fn, report)


def read_provider_csv(path: Path) -> Iterator[dict[str, str]]:
    """Rows of a provider CSV; raises IngestError when a required column is missing."""
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise IngestError(f"{Path(path).name}: missing column(s) {', '.join(missing)}; need {', '.join(CSV_COLUMNS)}[, image_path]")
        for row in reader:
            yield {(k or "").strip(): (v or "").strip() for k, v in row.items()}


def csv_drafts(
    path: Path,
    source: str,
    secret: str,
    label_fn: LabelFn,
    *,
    issuer: str | None = None,
    limit: int | None = None,
    report: IngestReport | None = None,
    exclude_cases: Collection[str] = (),
) -> list[CaseDraft]:
    """Drafts of a provider CSV. Case and patient ids are pseudonymised (they may be accession
    numbers and MRNs); a row's `issuer` column, else `issuer`, else the default issuer names the
    namespace of its patient id; image paths are resolved against the CSV's folder. Rows whose
    case_id is in `exclude_cases` are left out (a held-out evaluation set)."""
    pseudonyms = Pseudonymizer(secret)
    base = Path(path).resolve().parent
    excluded = {c.strip() for c in exclude_cases}
    rows: list[dict[str, Any]] = []
    for i, row in enumerate(read_provider_csv(path)):
        if limit is not None and len(rows) >= limit:
            break
        if not row["case_id"] or not row["patient_id"]:
            raise IngestError(f"{Path(path).name} row {i + 2}: case_id and patient_id must not be empty")
        if row["case_id"] in excluded:
            continue
        image = row.get("image_path") or ""
        rows.append(
            {
                "case_key": pseudonyms.case_key(source, row["case_id"]),
                "patient_id": row["patient_id"],
                "issuer": row.get("issuer") or issuer,
                "findings": row["findings"],
                "impression": row["impression"],
                "image_ref": str((base / image).resolve()) if image else None,
            }
        )
    return _drafts(rows, source, secret, label_fn, report)


def _drafts(rows, source: str, secret: str, label_fn: LabelFn, report: IngestReport | None) -> list[CaseDraft]:
    report = report or IngestReport(source)
    pseudonyms = Pseudonymizer(secret)
    t0 = time.perf_counter()
    drafts = []
    for row in rows:
        report.read += 1
        findings, impression = row["findings"] or "", row["impression"] or ""
        if not findings.strip() and not impression.strip():
            report.skipped_empty += 1
            continue
        drafts.append(
            CaseDraft(
                case_key=row["case_key"],
                patient_key=pseudonyms.patient_key(row["patient_id"], row.get("issuer")),
                source=source,
                findings=findings,
                impression=impression,
                labels=dict(label_fn(findings, impression)),
                image_ref=row.get("image_ref"),
            )
        )
    report.seconds["label"] = report.seconds.get("label", 0.0) + time.perf_counter() - t0
    return drafts


# -- image embeddings ------------------------------------------------------------------------

_concept_model: Any = None


def _shipped_concept_model() -> Any:
    """The concept model on CPU (`radalign.concepts.heatmaps.ConceptAttention`: the shipped
    checkpoint), loaded once per process."""
    global _concept_model
    if _concept_model is None:
        from radalign.concepts.heatmaps import ConceptAttention

        _concept_model = ConceptAttention()
    return _concept_model


def embed_images(paths: Sequence[str | Path]) -> np.ndarray:
    """(n, 384) L2-normalised image embeddings in the report text space: each PNG/JPEG read as the
    preprocess stage writes a model input (`radalign.concepts_training.data.load_image`), embedded by the
    shipped concept model as the served one computes it (what the review service's learning loop
    stores for signed studies). A file Pillow cannot read raises IngestError naming it."""
    from radalign.concepts_training.data import load_image

    vectors = []
    for path in paths:
        try:
            model_input = load_image(path)
        except (OSError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError
            raise IngestError(f"{Path(path).name}: not an image that can be read (PNG/JPEG): {type(exc).__name__}") from exc
        vectors.append(_shipped_concept_model().embedding(model_input))
    matrix = np.asarray(vectors, dtype=np.float32).reshape(len(paths), -1)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


# -- pipeline --------------------------------------------------------------------------------


async def ingest_drafts(
    store: CaseStore,
    drafts: Sequence[CaseDraft],
    *,
    encoder: Any = None,
    batch_size: int = 256,
    with_images: bool = True,
    image_embedder: Callable[[Sequence[str]], np.ndarray | None] | None = None,
    progress: bool = True,
    report: IngestReport | None = None,
) -> IngestReport:
    """Embed the drafts not yet stored as they are and upsert them, `batch_size` at a time.

    `encoder`: anything with `.name` and `.encode(list[str]) -> (n, 384)` (default: the shared
    text encoder).
    """
    from tqdm.auto import tqdm

    if encoder is None:
        from radalign.text_encoder import get_text_encoder

        encoder = get_text_encoder()
    if image_embedder is None and with_images:
        image_embedder = embed_images
    image_model = getattr(image_embedder, "__qualname__", None) if with_images and image_embedder else None
    report = report or IngestReport(drafts[0].source if drafts else "empty")
    t_start = time.perf_counter()
    hashes = {d.case_key: d.content_hash(encoder.name, image_model) for d in drafts}
    stored = await store.existing_hashes(list(hashes))
    todo = [d for d in drafts if stored.get(d.case_key) != hashes[d.case_key]]
    report.unchanged += len(drafts) - len(todo)
    embed_s = upsert_s = 0.0
    with tqdm(total=len(todo), desc=f"embed+upsert {report.source}", unit="case", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            t0 = time.perf_counter()
            text_vectors = encoder.encode([d.text for d in batch])
            image_vectors = _image_vectors(batch, image_embedder, report) if image_model else {}
            embed_s += time.perf_counter() - t0
            records = [
                CaseRecord.from_draft(d, text_vectors[i], hashes[d.case_key], image_vectors.get(d.case_key))
                for i, d in enumerate(batch)
            ]
            t0 = time.perf_counter()
            report.changed += await store.upsert_many(records)
            upsert_s += time.perf_counter() - t0
            report.embedded += len(batch)
            report.with_images += len(image_vectors)
            bar.update(len(batch))
    report.seconds["embed"] = report.seconds.get("embed", 0.0) + embed_s
    report.seconds["upsert"] = report.seconds.get("upsert", 0.0) + upsert_s
    report.seconds["total"] = report.seconds.get("label", 0.0) + time.perf_counter() - t_start
    return report


def _image_vectors(batch: Sequence[CaseDraft], image_embedder, report: IngestReport) -> dict[str, np.ndarray]:
    named = [d for d in batch if d.image_ref]
    with_image = [d for d in named if Path(d.image_ref or "").is_file()]
    if len(with_image) < len(named):
        report.images_missing += len(named) - len(with_image)
        log.warning("%d image file(s) named by the corpus do not exist: those cases get no image embedding", len(named) - len(with_image))
    if not with_image:
        return {}
    vectors = image_embedder([d.image_ref for d in with_image])
    if vectors is None:
        return {}
    return {d.case_key: vectors[i] for i, d in enumerate(with_image)}


async def ensure_iu_cases(settings: Settings, limit: int | None = None) -> int:
    """Load the IU reports into the case store unless it already holds cases; returns the count
    (the demo, the soak test, the benchmarks and the integration tests seed the store this way)."""
    from radalign.kb.store import CaseStore

    async with await CaseStore.open(settings) as store:
        total = (await store.stats()).total
        if total == 0:
            report = IngestReport(IU_SOURCE)
            drafts = iu_drafts(settings.deid_secret, default_label_fn(), limit=limit, report=report)
            await ingest_drafts(store, drafts, with_images=False, progress=True, report=report)
            total = (await store.stats()).total
    return total
