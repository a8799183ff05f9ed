"""One version of a report to deliver: a draft (preliminary) or a signed report (final).

The delivery core treats both alike: a version is identified by its status and the hash of its
content, so a redelivered version is recognised and skipped, and a new one (a re-drafted text,
the radiologist's signed report) is sent and updates the same FHIR resources / study in the PACS.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from radalign.drafting.fhir import ReportStatus
from radalign.drafting.store import content_hash
from schemas.events import ReportDrafted, ReportFinal


@dataclass(frozen=True)
class ReportVersion:
    report: ReportDrafted
    status: ReportStatus = "preliminary"
    #: The signing radiologist (DICOM PN "Family^Given"); required when status is final.
    verifier: str = ""
    verified_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.status == "final" and not self.verifier:
            raise ValueError("a final report version needs its verifier")

    @property
    def version(self) -> str:
        return f"{self.status}-{content_hash(self.report)[:16]}"

    @property
    def issued(self) -> datetime:
        """Deterministic per version (a redelivery sends identical resources): the signing time,
        else when drafting started, else when the study was received."""
        if self.verified_at is not None:
            return self.verified_at
        drafted = [t.started_at for t in self.report.timings if t.stage == "drafting"]
        return drafted[-1] if drafted else self.report.study.received_at


def final_version(draft: ReportDrafted, signed: ReportFinal) -> ReportVersion:
    """The signed report as a deliverable version: the draft's study, concepts and provenance
    with the radiologist's text. The verifier is the signer's pseudonym (names stay in the review
    store)."""
    report = draft.model_copy(update={"findings": signed.findings, "impression": signed.impression, "sections": [], "footer": None})
    return ReportVersion(report, status="final", verifier=signed.signer_key, verified_at=signed.signed_at)
