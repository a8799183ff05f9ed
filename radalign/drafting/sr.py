"""The draft as a DICOM Basic Text SR (TID 2000 "Basic Diagnostic Imaging Report" layout),
written with highdicom and readable by any PACS.

highdicom implements the Enhanced/Comprehensive SR SOP classes but not Basic Text SR; the small
subclass below reuses its SR document machinery (content-item validation, patient/study
attributes, evidence sequences) with the Basic Text SR SOP class, whose content (CONTAINER and
TEXT items linked by CONTAINS) is a subset of what highdicom checks.

Patient and study attributes come from the re-identification mapping, here and only here. The
document is PRELIMINARY and UNVERIFIED: a radiologist verifies it in the reporting system.
UIDs derive from the report id, so re-rendering a report gives the same SOP Instance UID.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from io import BytesIO

import highdicom as hd
from highdicom.sr.sop import _SR
from pydicom import Dataset, dcmread
from pydicom.sr.coding import Code
from pydicom.uid import UID

from radalign import __version__
from radalign.drafting.identity import StudyIdentity
from schemas.events import ReportDrafted

BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")
REPORT_TITLE = Code("18748-4", "LN", "Diagnostic Imaging Report")
FINDINGS_SECTION = Code("121070", "DCM", "Findings")
FINDING = Code("121071", "DCM", "Finding")
IMPRESSIONS_SECTION = Code("121072", "DCM", "Impressions")
IMPRESSION = Code("121073", "DCM", "Impression")
SR_SERIES_NUMBER = 9001  # high, so the draft sorts after the acquired series in viewers


class BasicTextSR(_SR):
    """Basic Text SR document (SOP Class 1.2.840.10008.5.1.4.1.1.88.11)."""

    def __init__(self, evidence: list[Dataset], content: Dataset, **kwargs: object) -> None:
        super().__init__(evidence=evidence, content=content, sop_class_uid=BASIC_TEXT_SR, **kwargs)  # type: ignore[arg-type]


def _uid(report_id: str, part: str) -> str:
    # 2.25.<128-bit integer>: a UID derived from a UUID needs no registered root (PS3.5 B.2).
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, f'radalign:{report_id}:{part}').int}"


def _text(name: Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _content(report: ReportDrafted) -> Dataset:
    findings = hd.sr.ContainerContentItem(name=FINDINGS_SECTION, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    findings.ContentSequence = [_text(FINDING, report.findings)]
    impressions = hd.sr.ContainerContentItem(name=IMPRESSIONS_SECTION, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    impressions.ContentSequence = [_text(IMPRESSION, report.impression)]
    root = hd.sr.ContainerContentItem(name=REPORT_TITLE, template_id="2000")
    root.ContentSequence = [findings, impressions]
    return root


def _evidence(identity: StudyIdentity, report_id: str) -> tuple[list[Dataset], bool]:
    """Datasets carrying the patient/study attributes (and the instances the draft read);
    the flag says whether they name real instances."""
    def header() -> Dataset:
        ds = Dataset()
        ds.StudyInstanceUID = identity.study_instance_uid
        ds.PatientID = identity.patient_id
        ds.PatientName = identity.patient_name
        ds.PatientBirthDate = identity.birth_date.strftime("%Y%m%d") if identity.birth_date else ""
        ds.PatientSex = identity.sex
        if identity.issuer_of_patient_id:
            ds.IssuerOfPatientID = identity.issuer_of_patient_id
        ds.AccessionNumber = identity.accession_number
        ds.StudyID = identity.study_id
        ds.StudyDate = ""
        ds.StudyTime = ""
        ds.ReferringPhysicianName = ""
        return ds

    evidence = []
    for instance in identity.instances:
        ds = header()
        ds.SOPClassUID = instance.sop_class_uid
        ds.SOPInstanceUID = instance.sop_instance_uid
        ds.SeriesInstanceUID = instance.series_instance_uid
        evidence.append(ds)
    if evidence:
        return evidence, True
    # highdicom takes patient/study attributes from an evidence dataset; without known instances
    # a placeholder carries them and its evidence reference is removed again below.
    ds = header()
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = _uid(report_id, "placeholder")
    ds.SeriesInstanceUID = _uid(report_id, "placeholder-series")
    return [ds], False


def basic_text_sr(report: ReportDrafted, identity: StudyIdentity, *, created: datetime | None = None) -> Dataset:
    evidence, real = _evidence(identity, report.report_id)
    sr = BasicTextSR(
        evidence=evidence,
        content=_content(report),
        series_instance_uid=_uid(report.report_id, "series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=_uid(report.report_id, "instance"),
        instance_number=1,
        manufacturer="RadAlign Stream",
        is_complete=False,  # PARTIAL: a draft the radiologist completes
        is_final=False,  # PRELIMINARY
        is_verified=False,  # UNVERIFIED
        record_evidence=real,
        series_description="AI draft report (unverified)",
        software_versions=__version__,
        specific_character_set="ISO_IR 192",  # UTF-8: names and LLM text may leave ASCII
    )
    if not real:
        for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
            if keyword in sr:
                delattr(sr, keyword)
    when = created or datetime.now(timezone.utc)
    sr.ContentDate = when.strftime("%Y%m%d")
    sr.ContentTime = when.strftime("%H%M%S")
    return sr


def basic_text_sr_bytes(report: ReportDrafted, identity: StudyIdentity, *, created: datetime | None = None) -> bytes:
    """The SR as a DICOM Part 10 file."""
    buffer = BytesIO()
    basic_text_sr(report, identity, created=created).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read_sr_text(data: bytes) -> dict[str, str]:
    """{"findings", "impression", "verification", "sop_class"} of a Part 10 SR written above;
    re-parses the content tree with highdicom, which validates every content item."""
    ds = dcmread(BytesIO(data))
    tree = hd.sr.ContentSequence.from_sequence(ds.ContentSequence, is_root=False)
    out = {"verification": str(ds.VerificationFlag), "sop_class": str(ds.SOPClassUID)}
    for section in tree:
        for item in section.ContentSequence:
            if item.name == FINDING:
                out["findings"] = item.value
            elif item.name == IMPRESSION:
                out["impression"] = item.value
    return out
