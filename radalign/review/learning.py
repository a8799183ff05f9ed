"""The learning loop: a signed report becomes a case in the case store, through the kb's public API.

The case is keyed by the study (one case per study: an amendment replaces it), carries the
study's patient pseudonym (the gateway's, so retrieval's same-patient exclusion holds), the
signed text and its labels from the project's labeler, and no identifier.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from radalign.kb.case import CaseDraft
from radalign.kb.pseudonym import case_key
from schemas.events import ReportFinal

SIGNED_SOURCE = "review-signed"


def signed_case_draft(final: ReportFinal, secret: str, image_ref: str | None = None) -> CaseDraft:
    """`image_ref`: a local file of the study's model input (.npy); with an image embedder the
    case then also joins the image -> image index, where the next similar film finds it."""
    return CaseDraft(
        case_key=case_key(SIGNED_SOURCE, final.study.study_key, secret),
        patient_key=final.study.patient_key,
        source=SIGNED_SOURCE,
        findings=final.findings,
        impression=final.impression,
        labels=dict(final.labels),
        study_key=final.study.study_key,
        image_ref=image_ref,
    )


async def ingest_signed(
    case_store: Any,
    finals: Sequence[ReportFinal],
    secret: str,
    *,
    encoder: Any = None,
    image_refs: Mapping[str, str] | None = None,
    image_embedder: Callable[[Sequence[str]], np.ndarray | None] | None = None,
) -> list[tuple[str, str]]:
    """Embed and upsert the signed reports (idempotent: an unchanged case is not rewritten).
    `image_refs`: study_key -> model input file, embedded by `image_embedder`.
    Returns (final_id, case_key) per report."""
    from radalign.kb.ingest import ingest_drafts

    latest: dict[str, ReportFinal] = {}
    for final in finals:  # an amendment replaces the study's case: keep the highest version
        if final.study.study_key not in latest or final.version > latest[final.study.study_key].version:
            latest[final.study.study_key] = final
    refs = image_refs or {}
    drafts = {f.final_id: signed_case_draft(f, secret, refs.get(f.study.study_key)) for f in latest.values()}
    if drafts:
        await ingest_drafts(case_store, list(drafts.values()), encoder=encoder, with_images=image_embedder is not None,
                            image_embedder=image_embedder, progress=False)
    keys = {f.study.study_key: drafts[f.final_id].case_key for f in latest.values()}
    return [(f.final_id, keys[f.study.study_key]) for f in finals]
