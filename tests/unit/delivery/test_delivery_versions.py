"""Versions with identity (issue 26): a re-opened study's new draft has its own id and version
number and names the draft it replaces; the PACS gets an SR whose Predecessor Documents Sequence
names the SR it holds, the FHIR server the same DiagnosticReport updated (a new meta.versionId)
with the version's id and the replaced one's; the first sign-off replaces the draft."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from delivery_helpers import KEY, StoreSCP, make_identity, make_report, store_and_fhir

from radalign.config import Settings
from radalign.delivery.core import DeliveryCore
from radalign.delivery.destinations import DicomDestination, FhirDestination, RetryPolicy
from radalign.delivery.records import MemoryDeliveryRecords
from radalign.delivery.senders import DicomStoreSender, FhirSender, Sender
from radalign.delivery.version import ReportVersion, final_version
from radalign.drafting.core import draft_id_for
from radalign.loopback.fhir_server import LoopbackFhirServer
from radalign.reports.fhir import REPLACES_EXTENSION, VERSION_EXTENSION
from radalign.reports.reidentification import StaticReidentifier
from radalign.review.signers import Signer
from radalign.review.signoff import build_final
from schemas.events import ReportDrafted, ReviewRole

FAST = RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.05, timeout_s=30)
ATTENDING = Signer("rd-bbbbbbbbbbbbbbbb", "Ann Attending", "att-1", "https://idp.example", "radiologist", family_name="Attending", given_name="Ann")


def draft(version: int, findings: str) -> ReportDrafted:
    report = make_report(findings=findings)
    study = report.study.model_copy(update={"version": version})
    return report.model_copy(update={
        "study": study, "draft_version": version, "draft_id": draft_id_for(report.report_id, version),
        "replaces_draft_id": draft_id_for(report.report_id, version - 1) if version > 1 else None,
    })


@pytest.fixture
def peers():
    with store_and_fhir("R4") as both:
        yield both


def _core(scp: StoreSCP, fhir: LoopbackFhirServer) -> DeliveryCore:
    senders: list[Sender] = [
        DicomStoreSender(DicomDestination(name="pacs", kind="dicom", ae_title="PACS", host="127.0.0.1", port=scp.port, retry=FAST)),
        FhirSender(FhirDestination(name="ehr", kind="fhir", base_url=fhir.base_url, retry=FAST)),  # type: ignore[arg-type]  # pydantic coerces the str
    ]
    return DeliveryCore({s.name: s for s in senders}, MemoryDeliveryRecords(), StaticReidentifier({KEY: make_identity()}), Settings())


def _predecessor(sr) -> str:
    return sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID


def _versions(dr: dict) -> dict[str, str]:
    return {e["url"]: e["valueIdentifier"]["value"] for e in dr.get("extension", [])}


async def test_a_reopened_study_gets_a_new_draft_version_linked_to_the_one_it_replaces(peers):
    scp, fhir = peers
    core = _core(scp, fhir)
    first, second = draft(1, "The heart is enlarged. No pleural effusion."), draft(2, "The heart is enlarged. Small left pleural effusion.")
    assert first.report_id == second.report_id and first.draft_id != second.draft_id

    await core.deliver(ReportVersion(first))
    (dr1,) = fhir.all("DiagnosticReport")
    assert _versions(dr1) == {VERSION_EXTENSION: f"{first.report_id}-d1"}
    sr1 = scp.text_srs[-1]
    assert "PredecessorDocumentsSequence" not in sr1

    await core.deliver(ReportVersion(second))
    (dr2,) = fhir.all("DiagnosticReport")  # the same logical resource, updated
    assert dr2["id"] == dr1["id"] and dr2["meta"].get("versionId") != dr1["meta"].get("versionId")
    assert _versions(dr2) == {VERSION_EXTENSION: f"{first.report_id}-d2", REPLACES_EXTENSION: f"{first.report_id}-d1"}
    sr2 = scp.text_srs[-1]
    assert sr2.SOPInstanceUID != sr1.SOPInstanceUID and _predecessor(sr2) == sr1.SOPInstanceUID

    # the redelivered second draft sends nothing; the first sign-off replaces the latest draft
    assert {r.outcome for r in await core.deliver(ReportVersion(second))} == {"skipped"}
    signed = build_final(
        second, findings=second.findings, impression=second.impression, signer_key=ATTENDING.reviewer_key,
        signer_role=ReviewRole.RADIOLOGIST, version=1, labels={}, signed_at=datetime(2026, 11, 27, 12, tzinfo=UTC),
    )
    assert signed.replaces_id == second.draft_id and signed.final_id == f"{second.report_id}-v1"
    await core.deliver(final_version(second, signed, ATTENDING))
    (dr3,) = fhir.all("DiagnosticReport")
    assert dr3["status"] == "final" and _versions(dr3)[REPLACES_EXTENSION] == second.draft_id
    assert _predecessor(scp.text_srs[-1]) == sr2.SOPInstanceUID
