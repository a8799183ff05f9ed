"""The learning loop: a signed report becomes a case in the case store, through the kb's public API.

The case is keyed by the study (one case per study: an amendment replaces it), carries the
study's patient pseudonym (the gateway's, so retrieval's same-patient exclusion holds), the
signed text and its labels from the project's labeler. The study's own identifiers (from the
gateway's mapping) are redacted from the text if the reviewer typed them; the final event keeps
the text exactly as signed (it is the legal report, re-identified at delivery anyway).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from radalign.kb.case import CaseDraft
from radalign.pseudonymizer import case_key
from schemas.events import ReportFinal

SIGNED_SOURCE = "review-signed"
REDACTED = "[redacted]"


def known_identifiers(identity: Any) -> list[str]:
    """The study's own identifiers (a `radalign.reports.reidentification.StudyIdentity`) worth looking for
    in free text: ids, accession, UIDs, and each part of the patient's name of 3+ letters."""
    if identity is None:
        return []
    values = [identity.patient_id, identity.accession_number, identity.study_id, identity.study_instance_uid]
    values += [part for part in re.split(r"[\^ ,]+", identity.patient_name or "") if len(part) >= 3]
    return sorted({v.strip() for v in values if v and v.strip()}, key=len, reverse=True)


def redact(text: str, identifiers: Sequence[str]) -> str:
    """Replace the study's known identifiers typed into a report (whole words, any case).
    Free text is otherwise stored as signed: this catches what the system knows, not every name."""
    for value in identifiers:
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])", REDACTED, text, flags=re.IGNORECASE)
    return text


def signed_case_draft(final: ReportFinal, secret: str, image_ref: str | None = None, identifiers: Sequence[str] = ()) -> CaseDraft:
    """`image_ref`: a local file of the study's model input (.npy); with an image embedder the
    case then also joins the image -> image index, where the next similar film finds it.
    `identifiers`: the study's known identifiers, redacted from the stored text."""
    return CaseDraft(
        case_key=case_key(SIGNED_SOURCE, final.study.study_key, secret),
        patient_key=final.study.patient_key,
        source=SIGNED_SOURCE,
        findings=redact(final.findings, identifiers),
        impression=redact(final.impression, identifiers),
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
    identifiers: Mapping[str, Sequence[str]] | None = None,
) -> list[tuple[str, str]]:
    """Embed and upsert the signed reports (idempotent: an unchanged case is not rewritten).
    `image_refs`: study_key -> model input file, embedded by `image_embedder`.
    Returns (final_id, case_key) per report."""
    from radalign.kb.ingest import ingest_drafts

    latest: dict[str, ReportFinal] = {}
    for final in finals:  # an amendment replaces the study's case: keep the highest version
        if final.study.study_key not in latest or final.version > latest[final.study.study_key].version:
            latest[final.study.study_key] = final
    refs, ids = image_refs or {}, identifiers or {}
    drafts = {
        f.final_id: signed_case_draft(f, secret, refs.get(f.study.study_key), ids.get(f.study.study_key, ()))
        for f in latest.values()
    }
    if drafts:
        await ingest_drafts(case_store, list(drafts.values()), encoder=encoder, with_images=image_embedder is not None,
                            image_embedder=image_embedder, progress=False)
    keys = {f.study.study_key: drafts[f.final_id].case_key for f in latest.values()}
    return [(f.final_id, keys[f.study.study_key]) for f in finals]
