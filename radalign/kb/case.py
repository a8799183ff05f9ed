"""What the case store holds (`CaseRecord`) and what a similarity search returns (`Candidate`)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from radalign.kb.labels import Labels, LabelVector, decode_label_vector, encode_label_vector, labels_to_json

SearchBy = Literal["text", "image"]


def report_text(findings: str, impression: str) -> str:
    """The text that is embedded for a case: both sections, labelled, as a reader sees them."""
    parts = []
    if findings.strip():
        parts.append(f"FINDINGS: {findings.strip()}")
    if impression.strip():
        parts.append(f"IMPRESSION: {impression.strip()}")
    return "\n".join(parts)


_SPACE = re.compile(r"\s+")


def normalised_report(findings: str, impression: str) -> str:
    """Case-, space- and punctuation-insensitive form of a report, for de-duplication: corpora
    repeat boilerplate normal reports verbatim, and five copies of one text ground nothing."""
    text = f"{findings} || {impression}".lower()
    text = re.sub(r"[^a-z0-9|]+", " ", text)
    return _SPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class _CaseReport:
    """The report a case carries from its draft to its stored row (`CaseRecord.from_draft`)."""

    case_key: str
    patient_key: str
    source: str
    findings: str
    impression: str
    labels: Labels


@dataclass(frozen=True)
class CaseDraft(_CaseReport):
    """A report before embedding: everything the content hash covers."""

    study_key: str | None = None
    view: str | None = None
    image_ref: str | None = None  # a path or blob URI of the case's image, when it has one

    @property
    def text(self) -> str:
        return report_text(self.findings, self.impression)

    def content_hash(self, encoder_name: str, image_model: str | None = None) -> str:
        """sha256 over every input a stored row is derived from, the encoders' names included:
        switching the text encoder (or gaining an image model) re-embeds on the next ingest."""
        payload = {
            "case_key": self.case_key,
            "patient_key": self.patient_key,
            "study_key": self.study_key,
            "view": self.view,
            "source": self.source,
            "findings": self.findings,
            "impression": self.impression,
            "labels": labels_to_json(self.labels),
            "encoder": encoder_name,
            "image_ref": self.image_ref,
            "image_model": image_model if self.image_ref else None,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class CaseRecord(_CaseReport):
    """One row of `cases`, ready to upsert."""

    text_embedding: np.ndarray
    content_hash: str
    study_key: str | None = None
    view: str | None = None
    image_embedding: np.ndarray | None = None

    @property
    def label_vector(self) -> LabelVector:
        return encode_label_vector(self.labels)

    @classmethod
    def from_draft(
        cls, draft: CaseDraft, text_embedding: np.ndarray, content_hash: str, image_embedding: np.ndarray | None = None
    ) -> CaseRecord:
        return cls(
            case_key=draft.case_key,
            patient_key=draft.patient_key,
            source=draft.source,
            findings=draft.findings,
            impression=draft.impression,
            labels=dict(draft.labels),
            text_embedding=np.asarray(text_embedding, dtype=np.float32),
            content_hash=content_hash,
            study_key=draft.study_key,
            view=draft.view,
            image_embedding=None if image_embedding is None else np.asarray(image_embedding, dtype=np.float32),
        )


@dataclass(frozen=True)
class Candidate:
    """A case returned by a similarity search, before re-ranking."""

    case_key: str
    findings: str
    impression: str
    label_vector: LabelVector
    similarity: float  # cosine similarity (1 - cosine distance) to the query embedding
    by: SearchBy = "text"  # which index found it

    @property
    def labels(self) -> dict:
        return decode_label_vector(self.label_vector)
