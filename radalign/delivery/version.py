"""One version of a report to deliver: the AI's draft, or a signed version (preliminary when a
resident signed, final when an attending signed or co-signed, amended / corrected after that).

A version is identified by its status, its signed version number and the hash of its content,
so a redelivered version is recognised and skipped, and a new one is sent and updates the same
FHIR resources / study in the PACS / order in the RIS. A signed version carries its signers as
the identity provider names them (`radalign.review.signers`: re-identified at the output edge,
like the patient; a pseudonym never reaches a delivered record) and the signed text's labels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from radalign.reports.fhir import RELEASED_STATUSES, ReportStatus
from radalign.reports.store import content_hash
from radalign.review.signers import Signature, Signer
from schemas.events import ReportDrafted, ReportFinal

_SIGNED_VERSION = re.compile(r"^v(?P<n>\d+)-")


@dataclass(frozen=True)
class ReportVersion:
    report: ReportDrafted
    status: ReportStatus = "preliminary"
    #: The signing radiologist (DICOM PN "Family^Given") when no `signature` is given (legacy).
    verifier: str = ""
    verified_at: datetime | None = None
    #: A signed version (None: the AI's draft).
    signature: Signature | None = None
    #: What this destination holds of the version this one replaces (its delivery record's remote
    #: reference: the SR's SOP Instance UID for a PACS), so the new version names its predecessor.
    predecessor_ref: str = ""

    def __post_init__(self) -> None:
        if self.status in RELEASED_STATUSES and not (self.verifier or self.signature):
            raise ValueError("a released report version needs its verifier")
        if self.signature is None and self.status != "preliminary" and not self.verifier:
            raise ValueError("only a draft may be delivered without a signature")

    @property
    def signed(self) -> bool:
        return self.signature is not None

    @property
    def signed_version(self) -> int | None:
        return self.signature.version if self.signature else None

    @property
    def verifier_pn(self) -> str:
        """The verifying observer's DICOM PN (empty for a version no attending signed)."""
        if self.signature is not None:
            return self.signature.signer.dicom_pn if self.status in RELEASED_STATUSES else ""
        return self.verifier

    @property
    def version(self) -> str:
        if self.signature is not None:
            return f"v{self.signature.version}-{self.status}-{content_hash(self.report)[:16]}"
        return f"{self.status}-{content_hash(self.report)[:16]}"

    @property
    def issued(self) -> datetime:
        """Deterministic per version (a redelivery sends identical resources): the signing time,
        else when drafting started, else when the study was received."""
        if self.verified_at is not None:
            return self.verified_at
        drafted = [t.started_at for t in self.report.timings if t.stage == "drafting"]
        return drafted[-1] if drafted else self.report.study.received_at


def signed_number(report_version: str, report_status: str) -> int | None:
    """The signed version number of a delivery record's `report_version` (None: the AI draft);
    a legacy `final-<hash>` record counts as signed version 1."""
    match = _SIGNED_VERSION.match(report_version)
    if match:
        return int(match["n"])
    return 1 if report_status in RELEASED_STATUSES else None


def co_signer_keys(event: ReportFinal, history: Sequence[ReportFinal]) -> list[str]:
    """The pseudonyms of the residents whose preliminary versions `event` releases or revises:
    the unbroken run of preliminary versions it replaces (the signer excluded), newest first."""
    earlier = {f.version: f for f in history}
    keys: list[str] = []
    version = event.replaces_version
    while version is not None and version in earlier and earlier[version].status == "preliminary":
        key = earlier[version].signer_key
        if key != event.signer_key and key not in keys:
            keys.append(key)
        version = earlier[version].replaces_version
    return keys


def final_version(draft: ReportDrafted, signed: ReportFinal, signer: Signer, co_signers: Sequence[Signer] = ()) -> ReportVersion:
    """The signed report as a deliverable version: the draft's study, concepts and provenance
    with the signer's text, status and labels, and the signer re-identified (`signer`, looked up
    from `signed.signer_key` in the reviewer mapping; `co_signers`: the residents whose
    preliminary versions this one co-signs)."""
    report = draft.model_copy(update={"findings": signed.findings, "impression": signed.impression, "sections": [], "footer": None})
    signature = Signature(
        version=signed.version, signer=signer, co_signers=tuple(co_signers), replaces_version=signed.replaces_version,
        labels=dict(signed.labels),
    )
    return ReportVersion(report, status=signed.status, verified_at=signed.signed_at, signature=signature)
