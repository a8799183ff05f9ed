"""The test oracle of the Basic Text SR: how `radalign.reports.sr.basic_text_sr` built it with
highdicom (its private `highdicom.sr.sop._SR` base class) until the product wrote it with pydicom.

highdicom has no public Basic Text SR class; the product builds the same dataset directly (the
private base class cost ~8 ms of CPU per SR on the delivery hot path). This module keeps the
highdicom construction, unchanged, so the tests can check the product against it. The private
class lives here only: pyproject pins highdicom to the range this oracle is tested with.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import highdicom as hd
from highdicom.sr.sop import _SR  # private: highdicom has no public Basic Text SR class
from pydicom import Dataset
from pydicom.sr.codedict import codes

from radalign import __version__
from radalign.reports.assessment import assessment_line
from radalign.reports.reidentification import StudyIdentity
from radalign.reports.sr import (
    _UID,
    ASSESSMENT,
    ASSESSMENT_SECTION,
    BASIC_TEXT_SR,
    FINDING,
    FINDINGS_SECTION,
    IMPRESSION,
    IMPRESSIONS_SECTION,
    REPORT_TITLE,
    SR_SERIES_NUMBER,
    VERIFIED_STATUSES,
    _evidence,  # the patient/study evidence highdicom copies from (ai_results_sr's too): an input, not under test
    _signer_code,  # set on the dataset after highdicom's construction, in the old code too
    _uid,
    device_uid,
    requested_procedures,
    signed_instance_uid,
)
from radalign.review.signers import Signer
from schemas.events import ReportDrafted


class BasicTextSR(_SR):
    """Basic Text SR document (SOP Class 1.2.840.10008.5.1.4.1.1.88.11)."""

    def __init__(self, evidence: list[Dataset], content: Dataset, **kwargs: object) -> None:
        super().__init__(evidence=evidence, content=content, sop_class_uid=BASIC_TEXT_SR, **kwargs)  # type: ignore[arg-type]  # highdicom private base class: its init is typed narrower than it accepts


def _text(name, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _device_observer(report: ReportDrafted) -> list:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid(report),
        name="RadAlign Stream report drafting AI",
        manufacturer_name="RadAlign Stream",
        model_name=f"{report.model_name} {report.model_version}; {report.drafter}; {report.prompt_version}"[:64],
    )
    return list(hd.sr.ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device))


def _person_observers(people: Sequence[Signer]) -> list:
    items: list = []
    for person in people:
        attributes = hd.sr.PersonObserverIdentifyingAttributes(name=person.dicom_pn, login_name=person.identifier[:64] or None)
        items.extend(hd.sr.ObserverContext(observer_type=codes.DCM.Person, observer_identifying_attributes=attributes))
    return items


def _section(name, item_name, value: str) -> hd.sr.ContainerContentItem:
    section = hd.sr.ContainerContentItem(name=name, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    section.ContentSequence = [_text(item_name, value)]  # type: ignore[assignment]  # highdicom's __setattr__ wraps a list
    return section


def _content(report: ReportDrafted, people: Sequence[Signer] = ()) -> Dataset:
    root = hd.sr.ContainerContentItem(name=REPORT_TITLE, template_id="2000")
    root.ContentSequence = [  # type: ignore[assignment]  # highdicom's __setattr__ wraps a list
        *_device_observer(report), *_person_observers(people),
        _section(FINDINGS_SECTION, FINDING, report.findings),
        _section(IMPRESSIONS_SECTION, IMPRESSION, report.impression),
        _section(ASSESSMENT_SECTION, ASSESSMENT, assessment_line(report)),
    ]
    return root


def _predecessor(report_id: str, identity: StudyIdentity, replaced_uid: str) -> list[Dataset]:
    pre = Dataset()
    pre.StudyInstanceUID = identity.study_instance_uid
    pre.SeriesInstanceUID = _uid(report_id, "series")
    pre.SOPClassUID = BASIC_TEXT_SR
    pre.SOPInstanceUID = replaced_uid
    return [pre]


def oracle_basic_text_sr(
    report: ReportDrafted, identity: StudyIdentity, *, created: datetime | None = None, status: str = "preliminary",
    verifier: str = "", verified_at: datetime | None = None, document_version: str = "",
    verifying_organization: str = "RadAlign Stream review", signer: Signer | None = None, co_signers: Sequence[Signer] = (),
    signed_version: int | None = None, replaces_version: int | None = None, predecessor_uid: str | None = None,
) -> Dataset:
    """`basic_text_sr` as it was written with highdicom's `_SR` (same arguments, same dataset)."""
    verified = status in VERIFIED_STATUSES
    verifier = signer.dicom_pn if signer is not None else verifier
    if verified and not verifier:
        raise ValueError("a final (verified) SR needs the verifying radiologist's name")
    evidence, real = _evidence(identity, report.report_id)
    if signed_version is not None:
        sop_instance_uid = signed_instance_uid(report.report_id, signed_version)
    else:
        suffix = f":{status}:{document_version}" if (verified or document_version) else ""
        sop_instance_uid = _uid(report.report_id, f"instance{suffix}")
    replaced = signed_instance_uid(report.report_id, replaces_version) if replaces_version is not None else predecessor_uid
    previous = _predecessor(report.report_id, identity, replaced) if replaced and replaced != sop_instance_uid and _UID.match(replaced) else None
    people = [p for p in (signer, *co_signers) if p is not None]
    sr = BasicTextSR(
        evidence=evidence,
        content=_content(report, people),
        series_instance_uid=_uid(report.report_id, "series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer="RadAlign Stream",
        is_complete=verified or signer is not None,
        is_final=verified,
        is_verified=verified,
        verifying_observer_name=verifier if verified else None,
        verifying_organization=verifying_organization if verified else None,
        requested_procedures=requested_procedures(identity),
        previous_versions=previous,
        record_evidence=real,
        series_description=("AI report (verified)" if verified else "AI report (preliminary, signed by a resident)" if signer
                            else "AI draft report (unverified)"),
        software_versions=__version__,
        specific_character_set="ISO_IR 192",
    )
    if verified and signer is not None:
        sr.VerifyingObserverSequence[0].VerifyingObserverIdentificationCodeSequence = [_signer_code(signer)]
    if verified and verified_at is not None:
        sr.VerifyingObserverSequence[0].VerificationDateTime = verified_at.strftime("%Y%m%d%H%M%S")
    if not real:
        for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
            if keyword in sr:
                delattr(sr, keyword)
    when = created or datetime.now(UTC)
    sr.ContentDate = when.strftime("%Y%m%d")  # type: ignore[assignment]  # pydicom converts the string
    sr.ContentTime = when.strftime("%H%M%S")  # type: ignore[assignment]  # pydicom converts the string
    return sr
