"""The draft as a DICOM Basic Text SR (TID 2000 "Basic Diagnostic Imaging Report" layout),
written with highdicom and readable by any PACS.

highdicom implements the Enhanced/Comprehensive SR SOP classes but not Basic Text SR; the small
subclass below reuses its SR document machinery (content-item validation, patient/study
attributes, evidence sequences) with the Basic Text SR SOP class, whose content (CONTAINER,
TEXT, CODE and UIDREF items linked by CONTAINS / HAS OBS CONTEXT) is a subset of what highdicom
checks. That base class is private (`highdicom.sr.sop._SR`), so pyproject pins highdicom to the
release range this module is tested with (tests/unit/drafting/test_drafting_outputs.py builds,
reads back with highdicom and validates with dciodvfy).

Patient and study attributes (StudyDate/StudyTime included) come from the re-identification
mapping, here and only here; the order (ReferencedRequestSequence) when it is known. The AI is
the document's observer (TID 1002/1004 device observer context). A draft is PRELIMINARY, PARTIAL
and UNVERIFIED; a signed version (status "final") is FINAL, COMPLETE and VERIFIED with its
verifying observer. UIDs derive from the report id and the document version, so re-rendering the
same version gives the same SOP Instance UID and a new version gets a new one.

The content tree: the device observer context, then the Findings and Impressions sections, then
a "Current Procedure Descriptions" section with the AI assessment line (what the model assessed
and what it did not, `radalign.reports.assessment`), so the SR's text ends with it.

Beside the text, the AI's own results as a Comprehensive 3D SR in TID 1500 "Measurement Report"
(`ai_results_sr`), built only with highdicom's public API (`hd.sr.Comprehensive3DSR`,
`hd.sr.MeasurementReport`): the device observer context; an Image Library (TID 1600) of the
images the model read, where their image attributes are known (`InstanceIdentity.rows`, ...:
highdicom's TID 1602/1603 descriptors need modality, rows, columns and, for CR/DX, the patient
orientation and imager pixel spacing; the pseudonym tables hold only UIDs, so without them the
images are named by the measurement group's source images and the evidence sequence instead);
one measurement group (TID 1501) whose algorithm is identified by TID 4019
(`hd.sr.AlgorithmIdentification`: the concept model's name and version) and which holds one
Qualitative Evaluation per finding the model assessed (ReportDrafted.concepts less
not_assessed): the finding's code (SNOMED CT where the mapping is unambiguous, else the CheXpert
observation in the private scheme 99CHEXPERT) = SNOMED CT Present / Absent / Equivocal. A report
where the model claimed nothing (out of distribution, or every finding not assessed) gets no
TID 1500 SR at all (`ai_results_sr` returns None): an empty measurement report would read as
"the AI looked and found nothing". The AI's results are the algorithm's: the SR is COMPLETE,
PRELIMINARY and UNVERIFIED for every version of the report, with one SOP Instance UID per report
(a redelivery stores the same instance again), in its own series.

There is no public highdicom class for Basic Text SR (0.28 exposes Enhanced, Comprehensive and
Comprehensive 3D SR), so the text SR keeps the private base class noted above.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from io import BytesIO
from typing import TYPE_CHECKING, Literal

import highdicom as hd
from highdicom.sr.sop import _SR  # private: highdicom has no public Basic Text SR class (see the module docstring)
from pydicom import Dataset, dcmread
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import UID

from radalign import __version__
from radalign.drafting.concepts import SNOMED_FINDINGS
from radalign.reports.assessment import assessment_line
from radalign.reports.reidentification import StudyIdentity
from schemas.events import Certainty, ConceptScore, Observation, ReportDrafted

if TYPE_CHECKING:
    from radalign.review.signers import Signer

ReportStatus = Literal["preliminary", "final", "amended", "corrected"]
#: Statuses of a version an attending signed: FINAL and VERIFIED in the SR.
VERIFIED_STATUSES = ("final", "amended", "corrected")
#: Coding scheme of the signers' identifiers (a private scheme: PS3.16 8.2 "99" prefix).
SIGNER_SCHEME = "99RADALIGN"

BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")
REPORT_TITLE = Code("18748-4", "LN", "Diagnostic Imaging Report")
FINDINGS_SECTION = Code("121070", "DCM", "Findings")
FINDING = Code("121071", "DCM", "Finding")
IMPRESSIONS_SECTION = Code("121072", "DCM", "Impressions")
IMPRESSION = Code("121073", "DCM", "Impression")
# The AI assessment line (what the model assessed and what it did not) describes how the report
# was produced, not a finding about the image. TID 2000/2001/2002 put such text in a section
# headed "Current Procedure Descriptions" (DCM 121064: the same DCM heading family as Findings
# 121070 and Impressions 121072 above; CID 7001 now lists its LOINC twin 55111-9) as a TEXT item
# "Procedure Description" (DCM 121065, a CID 7002 report element). Not "Comment" (DCM 121106,
# outside CID 7002), and not a second Finding/Impression item, which would read as a claim.
ASSESSMENT_SECTION = codes.DCM.CurrentProcedureDescriptions
ASSESSMENT = codes.DCM.ProcedureDescription
SR_SERIES_NUMBER = 9001  # high, so the draft sorts after the acquired series in viewers
#: A DICOM UID (PS3.5 9.1): a predecessor reference from a delivery record is used only if it is one.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


class BasicTextSR(_SR):
    """Basic Text SR document (SOP Class 1.2.840.10008.5.1.4.1.1.88.11)."""

    def __init__(self, evidence: list[Dataset], content: Dataset, **kwargs: object) -> None:
        super().__init__(evidence=evidence, content=content, sop_class_uid=BASIC_TEXT_SR, **kwargs)  # type: ignore[arg-type]  # highdicom private base class: its init is typed narrower than it accepts


def _uid(report_id: str, part: str) -> str:
    # 2.25.<128-bit integer>: a UID derived from a UUID needs no registered root (PS3.5 B.2).
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, f'radalign:{report_id}:{part}').int}"


def _text(name: Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def device_uid(report: ReportDrafted) -> str:
    """One observer UID per combination of concept model, drafter and prompt version."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, f'radalign-device:{report.model_name}:{report.model_version}:{report.drafter}:{report.prompt_version}').int}"


def _device_observer(report: ReportDrafted) -> list:
    """TID 1002 observer context with TID 1004 device observer identifying attributes."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid(report),
        name="RadAlign Stream report drafting AI",
        manufacturer_name="RadAlign Stream",
        model_name=f"{report.model_name} {report.model_version}; {report.drafter}; {report.prompt_version}"[:64],
    )
    return list(hd.sr.ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device))


def _person_observers(people: Sequence[Signer]) -> list:
    """TID 1002 person observer context (TID 1003) for each signer: who interpreted the study."""
    items: list = []
    for person in people:
        attributes = hd.sr.PersonObserverIdentifyingAttributes(name=person.dicom_pn, login_name=person.identifier[:64] or None)
        items.extend(hd.sr.ObserverContext(observer_type=codes.DCM.Person, observer_identifying_attributes=attributes))
    return items


def signed_instance_uid(report_id: str, signed_version: int) -> str:
    """The SOP Instance UID of signed version n of a report (the target of a successor's
    Predecessor Documents Sequence)."""
    return _uid(report_id, f"instance:signed-v{signed_version}")


def _content(report: ReportDrafted, people: Sequence[Signer] = ()) -> Dataset:
    findings = hd.sr.ContainerContentItem(name=FINDINGS_SECTION, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    findings.ContentSequence = [_text(FINDING, report.findings)]  # type: ignore[assignment]  # highdicom types the attribute from its own init; its __setattr__ wraps a list
    impressions = hd.sr.ContainerContentItem(name=IMPRESSIONS_SECTION, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    impressions.ContentSequence = [_text(IMPRESSION, report.impression)]  # type: ignore[assignment]  # highdicom types the attribute from its own init; its __setattr__ wraps a list
    # Last, so the SR's text, like the FHIR text, ends with what the model assessed and did not.
    assessment = hd.sr.ContainerContentItem(name=ASSESSMENT_SECTION, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    assessment.ContentSequence = [_text(ASSESSMENT, assessment_line(report))]  # type: ignore[assignment]  # highdicom types the attribute from its own init; its __setattr__ wraps a list
    root = hd.sr.ContainerContentItem(name=REPORT_TITLE, template_id="2000")
    root.ContentSequence = [*_device_observer(report), *_person_observers(people), findings, impressions, assessment]  # type: ignore[assignment]  # highdicom types the attribute from its own init; its __setattr__ wraps a list
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
        ds.StudyDate = identity.study_date
        ds.StudyTime = identity.study_time
        ds.ReferringPhysicianName = identity.referring_physician_name
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


def requested_procedures(identity: StudyIdentity) -> list[Dataset] | None:
    """ReferencedRequestSequence items when the order is known (accession, requested procedure
    or order numbers), else None (the attribute is then absent: type 1C)."""
    if not (identity.accession_number or identity.requested_procedure_id or identity.placer_order_number or identity.filler_order_number):
        return None
    item = Dataset()
    item.StudyInstanceUID = identity.study_instance_uid
    item.ReferencedStudySequence = []
    item.AccessionNumber = identity.accession_number
    item.PlacerOrderNumberImagingServiceRequest = identity.placer_order_number
    item.FillerOrderNumberImagingServiceRequest = identity.filler_order_number
    item.RequestedProcedureID = identity.requested_procedure_id
    item.RequestedProcedureDescription = identity.requested_procedure_description
    item.RequestedProcedureCodeSequence = []
    return [item]


def basic_text_sr(
    report: ReportDrafted, identity: StudyIdentity, *, created: datetime | None = None, status: ReportStatus = "preliminary",
    verifier: str = "", verified_at: datetime | None = None, document_version: str = "",
    verifying_organization: str = "RadAlign Stream review",
    signer: Signer | None = None,
    co_signers: Sequence[Signer] = (),
    signed_version: int | None = None,
    replaces_version: int | None = None,
    predecessor_uid: str | None = None,
) -> Dataset:
    """The SR of one version of the report.

    A version an attending signed (`status` final, amended or corrected) is FINAL, COMPLETE and
    VERIFIED, with the signer (re-identified: `signer`, or `verifier` as DICOM PN) as Verifying
    Observer (name, and the identity provider's identifier in the Verifying Observer
    Identification Code Sequence). A resident's signed version is PRELIMINARY, COMPLETE and
    UNVERIFIED. Every signer (the attending and the residents whose work it co-signs) is also a
    person observer in the content (TID 1002/1003). A signed version `signed_version` has its own
    SOP Instance UID; one that replaces an earlier version names it in the Predecessor Documents
    Sequence: `replaces_version` (a signed version), else `predecessor_uid` (the SR this
    destination holds of the version replaced, e.g. a re-opened study's earlier draft)."""
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
        is_complete=verified or signer is not None,  # PARTIAL: a draft the radiologist completes
        is_final=verified,  # PRELIMINARY until an attending signs
        is_verified=verified,  # UNVERIFIED until an attending signs
        verifying_observer_name=verifier if verified else None,
        verifying_organization=verifying_organization if verified else None,
        requested_procedures=requested_procedures(identity),
        previous_versions=previous,
        record_evidence=real,
        series_description=("AI report (verified)" if verified else "AI report (preliminary, signed by a resident)" if signer
                            else "AI draft report (unverified)"),
        software_versions=__version__,
        specific_character_set="ISO_IR 192",  # UTF-8: names and LLM text may leave ASCII
    )
    if verified and signer is not None:
        sr.VerifyingObserverSequence[0].VerifyingObserverIdentificationCodeSequence = [_signer_code(signer)]
    if verified and verified_at is not None:
        sr.VerifyingObserverSequence[0].VerificationDateTime = verified_at.strftime("%Y%m%d%H%M%S")
    return _finish(sr, real, created)


def _predecessor(report_id: str, identity: StudyIdentity, replaced_uid: str) -> list[Dataset]:
    """Predecessor Documents Sequence content: the SR this version replaces."""
    pre = Dataset()
    pre.StudyInstanceUID = identity.study_instance_uid
    pre.SeriesInstanceUID = _uid(report_id, "series")
    pre.SOPClassUID = BASIC_TEXT_SR
    pre.SOPInstanceUID = replaced_uid
    return [pre]


def _signer_code(signer: Signer) -> Dataset:
    """Verifying Observer Identification Code Sequence item: the signer's identifier."""
    code = Dataset()
    if len(signer.identifier) <= 16:
        code.CodeValue = signer.identifier
    else:
        code.LongCodeValue = signer.identifier[:1024]
    code.CodingSchemeDesignator = SIGNER_SCHEME
    code.CodeMeaning = signer.display_name[:64]
    return code


def _finish(sr: Dataset, real: bool, created: datetime | None) -> Dataset:
    """Drops the placeholder's evidence references (no real instances known) and sets the content date/time."""
    if not real:
        for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
            if keyword in sr:
                delattr(sr, keyword)
    when = created or datetime.now(UTC)
    sr.ContentDate = when.strftime("%Y%m%d")
    sr.ContentTime = when.strftime("%H%M%S")
    return sr


def basic_text_sr_bytes(report: ReportDrafted, identity: StudyIdentity, *, created: datetime | None = None, **version: object) -> bytes:
    """The SR as a DICOM Part 10 file (`version`: status, verifier, verified_at, document_version)."""
    buffer = BytesIO()
    basic_text_sr(report, identity, created=created, **version).save_as(buffer, enforce_file_format=True)  # type: ignore[arg-type]  # version keywords are the strings basic_text_sr takes
    return buffer.getvalue()


def read_sr_text(data: bytes) -> dict[str, str]:
    """{"findings", "impression", "assessment", "verification", "sop_class"} of a Part 10 SR
    written above ("assessment": the AI assessment line, absent from an SR without one);
    re-parses the content tree with highdicom, which validates every content item."""
    ds = dcmread(BytesIO(data))
    tree = hd.sr.ContentSequence.from_sequence(ds.ContentSequence, is_root=False)
    out = {"verification": str(ds.VerificationFlag), "sop_class": str(ds.SOPClassUID)}
    for section in tree:
        for item in getattr(section, "ContentSequence", None) or []:
            if item.name == FINDING:
                out["findings"] = item.value
            elif item.name == IMPRESSION:
                out["impression"] = item.value
            elif item.name == ASSESSMENT:
                out["assessment"] = item.value
    return out


COMPREHENSIVE_3D_SR = UID("1.2.840.10008.5.1.4.1.1.88.34")
AI_SR_SERIES_NUMBER = 9002
#: Private coding scheme (PS3.16 8.2 "99" prefix) of the CheXpert observations without an
#: unambiguous SNOMED CT concept.
CHEXPERT_SCHEME = "99CHEXPERT"
STATE_CODES: dict[Certainty, Code] = {
    Certainty.PRESENT: Code("52101004", "SCT", "Present"),
    Certainty.ABSENT: Code("2667000", "SCT", "Absent"),
    Certainty.UNCERTAIN: Code("42425007", "SCT", "Equivocal"),
}
#: Procedure reported (TID 1500): SNOMED CT 399208008 "Plain X-ray of chest".
CHEST_XRAY = Code("399208008", "SCT", "Plain X-ray of chest")
AI_FINDINGS_TRACKING = "RadAlign Stream AI findings"
_PROJECTION = ("CR", "DX")


def finding_concept(observation: Observation) -> hd.sr.CodedConcept:
    if observation in SNOMED_FINDINGS:
        code, meaning = SNOMED_FINDINGS[observation]
        return hd.sr.CodedConcept(code, "SCT", meaning)
    return hd.sr.CodedConcept(observation.value, CHEXPERT_SCHEME, observation.value)


def claimed_concepts(report: ReportDrafted) -> list[ConceptScore]:
    """The findings the model assessed (its claims): the TID 1500 SR's evaluations."""
    skipped = set(report.not_assessed)
    return [c for c in report.concepts if c.observation not in skipped]


def _library_images(identity: StudyIdentity) -> list[Dataset]:
    """The instances whose image attributes are known, as highdicom's Image Library wants them."""
    images = []
    for instance in identity.instances:
        projection = instance.modality in _PROJECTION
        if not (instance.modality and instance.rows and instance.columns):
            continue
        if projection and not (len(instance.patient_orientation) == 2 and len(instance.imager_pixel_spacing) == 2):
            continue
        ds = Dataset()
        ds.SOPClassUID = instance.sop_class_uid
        ds.SOPInstanceUID = instance.sop_instance_uid
        ds.Modality = instance.modality
        ds.Rows, ds.Columns = instance.rows, instance.columns
        if projection:
            ds.PatientOrientation = list(instance.patient_orientation)
            ds.ImagerPixelSpacing = [float(v) for v in instance.imager_pixel_spacing]
        images.append(ds)
    return images


def ai_results_sr(report: ReportDrafted, identity: StudyIdentity, *, created: datetime | None = None) -> Dataset | None:
    """The model's results as a TID 1500 Comprehensive 3D SR (None when it claimed nothing)."""
    concepts = claimed_concepts(report)
    if not concepts:
        return None
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid(report),
        name="RadAlign Stream report drafting AI",
        manufacturer_name="RadAlign Stream",
        model_name=f"{report.model_name} {report.model_version}"[:64],
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device)
    )
    evaluations = [hd.sr.QualitativeEvaluation(name=finding_concept(c.observation), value=STATE_CODES[c.state]) for c in concepts]
    sources = [
        hd.sr.SourceImageForMeasurementGroup(referenced_sop_class_uid=i.sop_class_uid, referenced_sop_instance_uid=i.sop_instance_uid)
        for i in identity.instances
        if i.sop_class_uid and i.sop_instance_uid
    ]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=_uid(report.report_id, "ai-findings-tracking"), identifier=AI_FINDINGS_TRACKING),
        algorithm_id=hd.sr.AlgorithmIdentification(name=report.model_name[:64], version=report.model_version[:64] or "unknown", manufacturer="RadAlign Stream"),
        qualitative_evaluations=evaluations,
        source_images=sources or None,
    )
    content = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=CHEST_XRAY,
        imaging_measurements=[group],
        referenced_images=_library_images(identity) or None,
    )
    evidence, real = _evidence(identity, report.report_id)
    for ds in evidence if not real else ():
        ds.SOPClassUID = COMPREHENSIVE_3D_SR
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=content[0],
        series_instance_uid=_uid(report.report_id, "ai-results-series"),
        series_number=AI_SR_SERIES_NUMBER,
        sop_instance_uid=_uid(report.report_id, "ai-results-instance"),
        instance_number=1,
        manufacturer="RadAlign Stream",
        is_complete=True,
        is_final=False,  # the algorithm's results: never a radiologist's final word
        is_verified=False,
        requested_procedures=requested_procedures(identity),
        record_evidence=real,
        series_description="AI results (TID 1500, unverified)",
        software_versions=__version__,
        specific_character_set="ISO_IR 192",
    )
    return _finish(sr, real, created)


def ai_results_sr_bytes(report: ReportDrafted, identity: StudyIdentity, *, created: datetime | None = None) -> bytes | None:
    """The TID 1500 SR as a DICOM Part 10 file (None when the model claimed nothing)."""
    sr = ai_results_sr(report, identity, created=created)
    if sr is None:
        return None
    buffer = BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read_ai_results(data: bytes) -> dict[str, str]:
    """{finding meaning: value meaning} of a TID 1500 SR written above, read with highdicom's
    `srread` (which re-validates the content tree), plus "algorithm" (name and version)."""
    sr = hd.sr.srread(BytesIO(data))
    out: dict[str, str] = {}
    for group in sr.content.get_image_measurement_groups():  # type: ignore[attr-defined]  # srread of a TID 1500 SR: content is a MeasurementReport
        for evaluation in group.get_qualitative_evaluations():
            out[evaluation.name.meaning] = evaluation.value.meaning
        items = group[0].ContentSequence
        name = [i.value for i in items.find(codes.DCM.AlgorithmName)]
        version = [i.value for i in items.find(codes.DCM.AlgorithmVersion)]
        if name:
            out["algorithm"] = " ".join([*name[:1], *version[:1]])
    return out
