"""The draft as a DICOM Basic Text SR (TID 2000 "Basic Diagnostic Imaging Report" layout),
written with pydicom and readable by any PACS.

highdicom implements the Enhanced/Comprehensive SR SOP classes but not Basic Text SR (0.28 has no
public class for it). The text SR is built with pydicom directly (`Dataset`, `Sequence`). It was
built with highdicom's private SR base class (`highdicom.sr.sop._SR`), which deep-copies and
re-parses the content tree, collects evidence and checks IOD attributes: ~8 ms of CPU per SR on
the delivery hot path (~12-13 ms per SR then, ~4.5-5 ms now, most of it pydicom's writer; the
delivery-stage profile put it at ~15 ms per report). The dataset is the one that construction
wrote, attribute for attribute: the highdicom construction is kept as the test oracle
(tests/unit/reports/sr_oracle.py; test_basic_text_sr_oracle.py compares the two for every kind
of version, and tests/unit/drafting/test_drafting_outputs.py reads the SR back with highdicom and
validates it with dciodvfy). Only the library the file names differs: pydicom in the file meta
(Implementation Class UID and Version Name) and in the Contributing Equipment item, where
highdicom named itself.

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

`read_sr_text` reads the text SR back with highdicom, which validates every content item.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from io import BytesIO
from typing import TYPE_CHECKING, Literal

import highdicom as hd
import pydicom
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian
from pydicom.valuerep import DA, DT, TM

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


def _uid(report_id: str, part: str) -> str:
    # 2.25.<128-bit integer>: a UID derived from a UUID needs no registered root (PS3.5 B.2).
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, f'radalign:{report_id}:{part}').int}"


def device_uid(report: ReportDrafted) -> str:
    """One observer UID per combination of concept model, drafter and prompt version."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, f'radalign-device:{report.model_name}:{report.model_version}:{report.drafter}:{report.prompt_version}').int}"


def signed_instance_uid(report_id: str, signed_version: int) -> str:
    """The SOP Instance UID of signed version n of a report (the target of a successor's
    Predecessor Documents Sequence)."""
    return _uid(report_id, f"instance:signed-v{signed_version}")


# The Basic Text SR is written with pydicom directly: highdicom has no public Basic Text SR class,
# and its private base class (`highdicom.sr.sop._SR`: deep copy and re-parse of the content tree,
# evidence collection, IOD attribute checks) cost ~8 ms of CPU per SR on the delivery hot path
# (module docstring). The dataset is the one that construction wrote: tests/unit/reports/sr_oracle.py
# keeps it as the oracle, test_basic_text_sr_oracle.py compares the two for every kind of version.
_OBS_CONTEXT = "HAS OBS CONTEXT"
_CONTAINS = "CONTAINS"
_OBSERVER_TYPE, _DEVICE, _PERSON = codes.DCM.ObserverType, codes.DCM.Device, codes.DCM.Person
_DEVICE_UID, _DEVICE_NAME = codes.DCM.DeviceObserverUID, codes.DCM.DeviceObserverName
_DEVICE_MANUFACTURER, _DEVICE_MODEL = codes.DCM.DeviceObserverManufacturer, codes.DCM.DeviceObserverModelName
_PERSON_NAME, _PERSON_LOGIN = codes.DCM.PersonObserverName, codes.DCM.PersonObserverLoginName
_PROCESSING_EQUIPMENT = codes.DCM.ProcessingEquipment
#: Part 10 file meta: written by pydicom, so its implementation class UID and version name.
_IMPLEMENTATION_VERSION = f"PYDICOM {'.'.join(pydicom.__version_info__)}"


def _code(code: Code) -> Dataset:
    """Code Sequence item (the codes of this module: short values, no scheme version)."""
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _item(relationship: str, value_type: str, name: Code) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [_code(name)]
    return item


def _text(name: Code, value: str, relationship: str = _CONTAINS) -> Dataset:
    item = _item(relationship, "TEXT", name)
    item.TextValue = value
    return item


def _observer_type(kind: Code) -> Dataset:
    item = _item(_OBS_CONTEXT, "CODE", _OBSERVER_TYPE)
    item.ConceptCodeSequence = [_code(kind)]
    return item


def _device_observer(report: ReportDrafted) -> list[Dataset]:
    """TID 1002 observer context with TID 1004 device observer identifying attributes."""
    uid = _item(_OBS_CONTEXT, "UIDREF", _DEVICE_UID)
    uid.UID = device_uid(report)
    model = f"{report.model_name} {report.model_version}; {report.drafter}; {report.prompt_version}"[:64]
    return [
        _observer_type(_DEVICE), uid,
        _text(_DEVICE_NAME, "RadAlign Stream report drafting AI", _OBS_CONTEXT),
        _text(_DEVICE_MANUFACTURER, "RadAlign Stream", _OBS_CONTEXT),
        _text(_DEVICE_MODEL, model, _OBS_CONTEXT),
    ]


def _person_observers(people: Sequence[Signer]) -> list[Dataset]:
    """TID 1002 person observer context (TID 1003) for each signer: who interpreted the study."""
    items: list[Dataset] = []
    for person in people:
        name = _item(_OBS_CONTEXT, "PNAME", _PERSON_NAME)
        name.PersonName = person.dicom_pn
        items += [_observer_type(_PERSON), name]
        if login := person.identifier[:64]:
            items.append(_text(_PERSON_LOGIN, login, _OBS_CONTEXT))
    return items


def _section(name: Code, item_name: Code, value: str) -> Dataset:
    section = _item(_CONTAINS, "CONTAINER", name)
    section.ContinuityOfContent = "CONTINUOUS"
    section.ContentSequence = [_text(item_name, value)]
    return section


def _set_content(sr: Dataset, report: ReportDrafted, people: Sequence[Signer]) -> None:
    """The root CONTAINER (TID 2000): observers, Findings, Impressions, the assessment section."""
    sr.ValueType = "CONTAINER"
    sr.ConceptNameCodeSequence = [_code(REPORT_TITLE)]
    sr.ContinuityOfContent = "CONTINUOUS"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2000"
    sr.ContentTemplateSequence = [template]
    sr.ContentSequence = [
        *_device_observer(report), *_person_observers(people),
        _section(FINDINGS_SECTION, FINDING, report.findings),
        _section(IMPRESSIONS_SECTION, IMPRESSION, report.impression),
        # Last, so the SR's text, like the FHIR text, ends with what the model assessed and did not.
        _section(ASSESSMENT_SECTION, ASSESSMENT, assessment_line(report)),
    ]


def _evidence(identity: StudyIdentity, report_id: str) -> tuple[list[Dataset], bool]:
    """Datasets carrying the patient/study attributes (and the instances the draft read) for
    highdicom (`ai_results_sr`); the flag says whether they name real instances."""
    evidence = []
    for instance in identity.instances:
        ds = _patient_study(identity)
        ds.SOPClassUID = instance.sop_class_uid
        ds.SOPInstanceUID = instance.sop_instance_uid
        ds.SeriesInstanceUID = instance.series_instance_uid
        evidence.append(ds)
    if evidence:
        return evidence, True
    # highdicom takes patient/study attributes from an evidence dataset; without known instances
    # a placeholder carries them and its evidence reference is removed again (`_finish`).
    ds = _patient_study(identity)
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = _uid(report_id, "placeholder")
    ds.SeriesInstanceUID = _uid(report_id, "placeholder-series")
    return [ds], False


def _patient_study(identity: StudyIdentity, ds: Dataset | None = None) -> Dataset:
    """The Patient and General Study attributes (re-identified) set on `ds` (default: a new dataset)."""
    ds = Dataset() if ds is None else ds
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


def _instance_evidence(identity: StudyIdentity) -> list[Dataset]:
    """Current Requested Procedure Evidence Sequence: the instances the draft read, by series
    in order of appearance, each instance once."""
    series: dict[str, list[Dataset]] = {}
    seen: set[str] = set()
    for instance in identity.instances:
        if instance.sop_instance_uid in seen:
            continue
        seen.add(instance.sop_instance_uid)
        ref = Dataset()
        ref.ReferencedSOPClassUID = instance.sop_class_uid
        ref.ReferencedSOPInstanceUID = instance.sop_instance_uid
        series.setdefault(instance.series_instance_uid, []).append(ref)
    return [_study_reference(identity.study_instance_uid, series)]


def _study_reference(study_uid: str, series: dict[str, list[Dataset]]) -> Dataset:
    study = Dataset()
    study.StudyInstanceUID = study_uid
    study.ReferencedSeriesSequence = []
    for series_uid, instances in series.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        item.ReferencedSOPSequence = instances
        study.ReferencedSeriesSequence.append(item)
    return study


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


def _file_meta(sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION
    write_file_meta_info(DicomBytesIO(), meta, enforce_standard=True)  # sets FileMetaInformationGroupLength
    return meta


def _contributing_equipment(now: datetime) -> Dataset:
    """Contributing Equipment Sequence item: the software library that wrote the instance."""
    item = Dataset()
    item.Manufacturer = "pydicom contributors"
    item.PurposeOfReferenceCodeSequence = [_code(_PROCESSING_EQUIPMENT)]
    item.ManufacturerModelName = "pydicom"
    item.SoftwareVersions = pydicom.__version__
    item.ContributionDateTime = DT(now)
    item.ContributionDescription = "Software library used to create this instance"
    return item


def _document(identity: StudyIdentity, report_id: str, sop_instance_uid: str, now: datetime) -> Dataset:
    """The SR's file meta, Patient, General Study, SR Document Series, General Equipment and SOP
    Common attributes."""
    sr = Dataset()
    sr.preamble = b"\x00" * 128
    sr.file_meta = _file_meta(sop_instance_uid)
    sr.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names and LLM text may leave ASCII
    _patient_study(identity, sr)
    sr.SeriesInstanceUID = _uid(report_id, "series")
    sr.SeriesNumber = SR_SERIES_NUMBER
    sr.Modality = "SR"
    sr.Manufacturer = "RadAlign Stream"
    sr.SoftwareVersions = __version__
    sr.SOPInstanceUID = sop_instance_uid
    sr.SOPClassUID = BASIC_TEXT_SR
    sr.InstanceNumber = 1
    sr.InstanceCreationDate = DA(now.date())
    sr.InstanceCreationTime = TM(now.time())
    sr.ReferencedPerformedProcedureStepSequence = []
    sr.PerformedProcedureCodeSequence = []
    sr.ContributingEquipmentSequence = [_contributing_equipment(now)]
    return sr


def _sop_instance_uid(report_id: str, status: str, verified: bool, document_version: str, signed_version: int | None) -> str:
    if signed_version is not None:
        return signed_instance_uid(report_id, signed_version)
    suffix = f":{status}:{document_version}" if (verified or document_version) else ""
    return _uid(report_id, f"instance{suffix}")


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
    sop_instance_uid = _sop_instance_uid(report.report_id, status, verified, document_version, signed_version)
    replaced = signed_instance_uid(report.report_id, replaces_version) if replaces_version is not None else predecessor_uid
    now = datetime.now()  # local time, as highdicom wrote it: instance creation, contribution, default verification
    sr = _document(identity, report.report_id, sop_instance_uid, now)
    sr.SeriesDescription = ("AI report (verified)" if verified else "AI report (preliminary, signed by a resident)" if signer
                            else "AI draft report (unverified)")
    sr.CompletionFlag = "COMPLETE" if verified or signer is not None else "PARTIAL"  # PARTIAL: a draft the radiologist completes
    sr.VerificationFlag = "VERIFIED" if verified else "UNVERIFIED"  # UNVERIFIED until an attending signs
    sr.PreliminaryFlag = "FINAL" if verified else "PRELIMINARY"  # PRELIMINARY until an attending signs
    if verified:
        when = verified_at.strftime("%Y%m%d%H%M%S") if verified_at is not None else DT(now)
        sr.VerifyingObserverSequence = [_verifying_observer(verifier, verifying_organization, signer, when)]
    _set_content(sr, report, [p for p in (signer, *co_signers) if p is not None])
    if identity.instances:  # else no evidence: nothing the draft read is known
        sr.CurrentRequestedProcedureEvidenceSequence = _instance_evidence(identity)
    if (request := requested_procedures(identity)) is not None:
        sr.ReferencedRequestSequence = request
    if replaced and replaced != sop_instance_uid and _UID.match(replaced):
        sr.PredecessorDocumentsSequence = _predecessor(report.report_id, identity, replaced)
    return _finish(sr, real=True, created=created)


def _verifying_observer(name: str, organization: str, signer: Signer | None, when: str | DT) -> Dataset:
    """Verifying Observer Sequence item: the attending, their identifier when known, when they signed."""
    observer = Dataset()
    observer.VerifyingObserverName = name
    observer.VerifyingOrganization = organization
    observer.VerificationDateTime = when
    observer.VerifyingObserverIdentificationCodeSequence = [_signer_code(signer)] if signer is not None else []
    return observer


def _predecessor(report_id: str, identity: StudyIdentity, replaced_uid: str) -> list[Dataset]:
    """Predecessor Documents Sequence: the SR this version replaces."""
    pre = Dataset()
    pre.ReferencedSOPClassUID = BASIC_TEXT_SR
    pre.ReferencedSOPInstanceUID = replaced_uid
    return [_study_reference(identity.study_instance_uid, {_uid(report_id, "series"): [pre]})]


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
