"""De-identification at the gateway: stable HMAC pseudonyms and a cleaned copy of each object.

Follows the DICOM Basic Application Level Confidentiality Profile (PS3.15 E.1, code 113100)
the strict way round: instead of deleting the ~300 attributes of Table E.1-1 one by one, the
cleaned object is built from an allowlist of the image and acquisition attributes the pipeline
needs (none of which the profile lists), plus the profile's required replacements (UIDs mapped
to pseudonymous 2.25 UIDs, type-2 identity attributes present but empty or pseudonymous, dates
removed, `PatientIdentityRemoved=YES` and the method code sequence). Anything not on the list
(private tags, free-text descriptions, sequences with references) never leaves the gateway.

Retained attributes are retained by value too (issue 12): every text attribute kept must take a
value from a closed set (ViewPosition, laterality, LUT types...) or it is dropped, and items of
retained sequences are rebuilt from their own allow-lists (a name nested in a code item or a LUT
explanation does not survive). An object that declares BurnedInAnnotation=YES is refused (the
pixels themselves may show the patient's name), unless `deid_refuse_burned_in` is turned off.

Pseudonyms are HMAC-SHA256 under `settings.deid_secret` (`radalign.pseudonymizer`, the one place
keys are derived), so the same study sent twice (or a late
instance sent a day later) gets the same keys; without the secret they cannot be reversed or
recomputed from a guessed identifier.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from radalign.ingest.dicom import VIEW_POSITIONS, normalise_view
from radalign.ingest.refusal import Refusal, RefusalReason
from radalign.pseudonymizer import Pseudonymizer

__all__ = ["OriginalIdentifiers", "Pseudonymizer", "deidentify", "encode_dicom", "original_identifiers", "view_hint"]

#: Attributes copied unchanged: image pixel, VOI/modality LUT, view and geometry, no identity.
RETAINED_KEYWORDS: tuple[str, ...] = (
    "SpecificCharacterSet", "ImageType", "SOPClassUID", "Modality", "ConversionType",
    "BodyPartExamined", "ViewPosition", "ImageLaterality", "Laterality", "PatientOrientation", "ViewCodeSequence",
    "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "NumberOfFrames", "Rows", "Columns",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelPaddingValue", "PixelPaddingRangeLimit",
    "PixelSpacing", "ImagerPixelSpacing", "PixelAspectRatio", "PixelIntensityRelationship", "PixelIntensityRelationshipSign",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence",
    "WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence", "PresentationLUTShape",
    "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod", "BurnedInAnnotation",
    "PixelData",
)

#: Closed value sets of the retained text attributes (CS); any other value is dropped.
_CLOSED_VALUES: dict[str, frozenset[str]] = {
    "Modality": frozenset({"CR", "DX", "SC", "OT"}),
    "ConversionType": frozenset({"DV", "DI", "DF", "WSD", "SD", "SI", "DRW", "SYN"}),
    "BodyPartExamined": frozenset({"CHEST", "THORAX", "LUNG", "HEART", "RIB", "RIBS", "ABDOMEN", "WHOLEBODY"}),
    "ViewPosition": VIEW_POSITIONS,
    "ImageLaterality": frozenset({"R", "L", "U", "B"}),
    "Laterality": frozenset({"R", "L"}),
    "ImageType": frozenset({"ORIGINAL", "DERIVED", "PRIMARY", "SECONDARY", "POST_PROCESSED", "FOR_PRESENTATION", "FOR_PROCESSING", ""}),
    "PhotometricInterpretation": frozenset({"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR"}),
    "PixelIntensityRelationship": frozenset({"LIN", "LOG", "DISP"}),
    "RescaleType": frozenset({"US", "OD", "HU", "MGML"}),
    "VOILUTFunction": frozenset({"LINEAR", "LINEAR_EXACT", "SIGMOID"}),
    "PresentationLUTShape": frozenset({"IDENTITY", "INVERSE"}),
    "LossyImageCompression": frozenset({"00", "01"}),
    "LossyImageCompressionMethod": frozenset({"ISO_10918_1", "ISO_14495_1", "ISO_15444_1", "ISO_15444_15", "ISO_13818_2", "ISO_14496_10", "ISO_18181_1"}),
    "BurnedInAnnotation": frozenset({"YES", "NO"}),
    "ModalityLUTType": frozenset({"OD", "HU", "US", "MGML"}),
}
_PATTERNS: dict[str, re.Pattern[str]] = {
    "SpecificCharacterSet": re.compile(r"^(ISO[_ ]IR[_ ]\d{1,3}|ISO 2022 IR \d{1,3}|GB18030|GBK)?$"),
    "PatientOrientation": re.compile(r"^[APLRHF]{0,3}$"),
    "SOPClassUID": re.compile(r"^[0-9.]{1,64}$"),
}
#: Text VRs: a retained element of one of these needs a closed set or a pattern above.
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"})
_NUMBER_TEXT = re.compile(r"^[0-9eE+\-. ]{0,32}$")
#: Items of retained sequences, rebuilt from these keywords only (recursively for nested sequences).
_SEQUENCE_ITEMS: dict[str, tuple[str, ...]] = {
    "ViewCodeSequence": ("CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "ViewModifierCodeSequence"),
    "ViewModifierCodeSequence": ("CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion"),
    "ModalityLUTSequence": ("LUTDescriptor", "ModalityLUTType", "LUTData"),
    "VOILUTSequence": ("LUTDescriptor", "LUTData"),
}
_CODE = re.compile(r"^[A-Za-z0-9.\-_]{1,16}$")
_CODE_PATTERNS = {"CodeValue": _CODE, "CodingSchemeDesignator": _CODE, "CodingSchemeVersion": _CODE}


def _value_allowed(keyword: str, element: Any) -> bool:
    """May this retained element's value travel on? Closed sets for text, numbers for DS/IS."""
    vr = element.VR
    if vr == "SQ":
        return True
    values = element.value if element.VM > 1 else [element.value]
    texts = ["" if v is None else str(v).strip() for v in values]
    if keyword in _CLOSED_VALUES:
        return all(t.upper() in _CLOSED_VALUES[keyword] for t in texts)
    pattern = _PATTERNS.get(keyword) or _CODE_PATTERNS.get(keyword)
    if pattern is not None:
        return all(pattern.match(t) for t in texts)
    if vr in ("DS", "IS"):
        return all(_NUMBER_TEXT.match(t) for t in texts)
    return vr not in _TEXT_VRS  # numbers and binary data (US, SS, OB, OW, FL...) carry no text


def _clean_items(keyword: str, sequence: Iterable[Dataset]) -> Sequence:
    allowed = _SEQUENCE_ITEMS[keyword]
    items = []
    for item in sequence:
        clean = Dataset()
        for name in allowed:
            if name not in item:
                continue
            element = item[name]
            if element.VR == "SQ":
                clean[name] = DataElement(element.tag, "SQ", _clean_items(name, element.value or []))
            elif _value_allowed(name, element):
                clean[name] = element
        items.append(clean)
    return Sequence(items)


#: ISO 10918-1 (JPEG) transfer syntaxes: their frames are JPEG streams whose APPn / COM segments
#: can carry text (EXIF, a name in a comment), cleaned like an uploaded JPEG.
_JPEG_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"})


def _clean_pixel_data(ds: Dataset) -> DataElement:
    """Pixel Data as is, except JPEG frames, which lose their text-bearing segments (pixels untouched)."""
    element = ds["PixelData"]
    if str(ds.file_meta.get("TransferSyntaxUID", "")) not in _JPEG_SYNTAXES:
        return element
    from pydicom.encaps import encapsulate, generate_frames

    from radalign.ingest.images import strip_raster_metadata
    from radalign.ingest.refusal import Refusal, RefusalReason

    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        cleaned = [strip_raster_metadata(frame) for frame in generate_frames(element.value, number_of_frames=frames)]
    except ValueError as exc:
        raise Refusal(RefusalReason.UNREADABLE, "a JPEG frame of the pixel data is malformed") from exc
    return DataElement(element.tag, "OB", encapsulate(cleaned, has_bot=len(cleaned) > 1), is_undefined_length=True)


#: Type-2 identity attributes the profile keeps present but empty (Z action).
EMPTIED_KEYWORDS: tuple[str, ...] = (
    "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
)

_VIEW_WORDS = (
    ("PA", re.compile(r"\bP\.?A\.?\b|POSTERO[- ]?ANTERIOR")),
    ("AP", re.compile(r"\bA\.?P\.?\b|ANTERO[- ]?POSTERIOR")),
    ("LATERAL", re.compile(r"\bLAT(ERAL)?\b|\bLL\b|\bRL\b")),
)


@dataclass(frozen=True)
class OriginalIdentifiers:
    """What is needed to route a report back to the source. Stored only in PostgreSQL."""

    study_uid: str
    patient_id: str
    patient_name: str
    accession_number: str
    sop_instance_uid: str | None = None
    series_uid: str | None = None
    sop_class_uid: str | None = None
    #: RequestedProcedureID, StudyID, order numbers, Request Attributes items, ServiceRequest refs.
    routing: dict[str, Any] = field(default_factory=dict)


def view_hint(ds: Dataset) -> str | None:
    """A view named in free text or codes (SeriesDescription, ProtocolName, ViewCodeSequence),
    used only when ViewPosition is missing. Returns PA, AP, LATERAL or None."""
    texts = [str(ds.get(k, "") or "") for k in ("SeriesDescription", "ProtocolName", "AcquisitionDeviceProcessingDescription")]
    for item in ds.get("ViewCodeSequence", []) or []:
        texts.append(str(item.get("CodeMeaning", "") or ""))
    text = " ".join(texts).upper()
    for view, pattern in _VIEW_WORDS:
        if pattern.search(text):
            return view
    return None


def _routing(ds: Dataset) -> dict[str, Any]:
    routing: dict[str, Any] = {}
    for keyword in (
        "StudyID", "RequestedProcedureID", "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest", "IssuerOfPatientID", "PerformedProcedureStepID",
        # For the report outputs (SR, FHIR effective time): kept only in PostgreSQL, like the rest.
        "StudyDate", "StudyTime", "TimezoneOffsetFromUTC", "PatientBirthDate", "PatientSex",
        "ReferringPhysicianName", "RequestedProcedureDescription",
    ):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            routing[keyword] = value
    requests = []
    for item in ds.get("RequestAttributesSequence", []) or []:
        entry = {
            k: str(item.get(k, "") or "")
            for k in ("AccessionNumber", "RequestedProcedureID", "ScheduledProcedureStepID", "StudyInstanceUID")
            if str(item.get(k, "") or "").strip()
        }
        if entry:
            requests.append(entry)
    if requests:
        routing["RequestAttributes"] = requests
    refs = [str(item.get("ReferencedSOPInstanceUID", "")) for item in ds.get("ReferencedStudySequence", []) or []]
    if any(refs):
        routing["ReferencedStudies"] = [r for r in refs if r]
    return routing


def original_identifiers(ds: Dataset) -> OriginalIdentifiers:
    return OriginalIdentifiers(
        study_uid=str(ds.get("StudyInstanceUID", "")).strip(),
        patient_id=str(ds.get("PatientID", "") or "").strip(),
        patient_name=str(ds.get("PatientName", "") or "").strip(),
        accession_number=str(ds.get("AccessionNumber", "") or "").strip(),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")).strip() or None,
        series_uid=str(ds.get("SeriesInstanceUID", "")).strip() or None,
        sop_class_uid=str(ds.get("SOPClassUID", "")).strip() or None,
        routing=_routing(ds),
    )


def deidentify(
    ds: Dataset, pseudonyms: Pseudonymizer, issuer: str | None = None, *, refuse_burned_in: bool = True
) -> tuple[Dataset, OriginalIdentifiers]:
    """A new, cleaned dataset (the input is not modified) and the identifiers it replaced.

    `issuer`: the namespace of PatientID (`radalign.pseudonymizer.IssuerPolicy`); None: the object's
    IssuerOfPatientID, else the pseudonymizer's default issuer.
    Raises `Refusal` for BurnedInAnnotation=YES when `refuse_burned_in`.
    """
    if refuse_burned_in and str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
        raise Refusal(RefusalReason.BURNED_IN_ANNOTATION, "the image declares burned-in annotation (BurnedInAnnotation=YES)")
    original = original_identifiers(ds)
    if issuer is None:
        issuer = str(ds.get("IssuerOfPatientID", "") or "")
    if original.patient_id:
        patient_key = pseudonyms.patient_key(original.patient_id, issuer)
    else:  # the study stands for its patient: two studies of an unidentified patient are not linked
        patient_key = pseudonyms.unidentified_patient_key(original.study_uid, issuer)
    study_key = pseudonyms.study_key(original.study_uid)
    clean = Dataset()
    for keyword in RETAINED_KEYWORDS:
        if keyword not in ds or keyword == "PixelData":
            continue
        element = ds[keyword]
        if element.VR == "SQ" and keyword in _SEQUENCE_ITEMS:
            clean[keyword] = DataElement(element.tag, "SQ", _clean_items(keyword, element.value or []))
        elif element.VR != "SQ" and _value_allowed(keyword, element):
            clean[keyword] = element
    if "PixelData" in ds:
        clean["PixelData"] = _clean_pixel_data(ds)
    for keyword in EMPTIED_KEYWORDS:
        setattr(clean, keyword, "")
    clean.PatientName = patient_key
    clean.PatientID = patient_key
    clean.StudyID = study_key[:16]  # SH: 16 characters
    clean.StudyInstanceUID = pseudonyms.uid("study", original.study_uid)
    clean.SeriesInstanceUID = pseudonyms.uid("series", original.series_uid or original.study_uid)
    clean.SOPInstanceUID = pseudonyms.uid("instance", original.sop_instance_uid or "")
    hint = view_hint(ds)
    if hint is not None and normalise_view(ds.get("ViewPosition")) is None:
        # Clean Descriptors in spirit: the free text is dropped, only the view word it named is kept.
        clean.SeriesDescription = hint
    clean.PatientIdentityRemoved = "YES"
    clean.LongitudinalTemporalInformationModified = "REMOVED"
    clean.DeidentificationMethod = "RadAlign allowlist, basic profile, HMAC-SHA256 pseudonyms"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "113100", "DCM", "Basic Application Confidentiality Profile"
    clean.DeidentificationMethodCodeSequence = Sequence([code])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = clean.SOPClassUID
    meta.MediaStorageSOPInstanceUID = clean.SOPInstanceUID
    meta.TransferSyntaxUID = ds.file_meta.TransferSyntaxUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    clean.file_meta = meta
    return clean, original


def encode_dicom(ds: Dataset) -> bytes:
    """Part 10 bytes (preamble, file meta, data set)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
