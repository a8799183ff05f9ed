"""Helpers for the intake tests and benchmarks: a recording publisher and a bad-input corpus.

The recorder stands in for Kafka in unit tests only; integration tests use the real producer.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGLossless, generate_uid

from radalign.ingest.refusal import RefusalReason
from radalign.samples import dicom_bytes, send_c_store
from schemas.events import Contract
from schemas.topics import TopicSpec

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class RecordingPublisher:
    """In-memory `EventPublisher`: keeps (topic, event) in order; `fail_next` simulates an outage."""

    def __init__(self) -> None:
        self.records: list[tuple[str, Contract]] = []
        self.fail_next = 0

    async def publish(self, spec: TopicSpec, event: Contract, *, traceparent: str | None = None, ev_id: str | None = None) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("broker unavailable (simulated)")
        study = getattr(event, "study", None)
        self.records.append((spec.lane(study.priority) if study is not None else spec.name, event))

    @property
    def events(self) -> list[Contract]:
        return [e for _, e in self.records]


def send_cstore(port: int, ds: Dataset, *, calling_ae: str, called_ae: str = "RADALIGN", timeout_s: float = 30.0) -> int:
    """One C-STORE of `ds` to a DICOM SCP on loopback (`radalign.samples.send_c_store`); its status."""
    [status] = send_c_store("127.0.0.1", port, [ds], calling_ae=calling_ae, called_ae=called_ae, timeout_s=timeout_s)
    return status


def with_changes(ds: Dataset, **changes: object) -> Dataset:
    """A deep copy with attributes set (value) or deleted (None)."""
    out = copy.deepcopy(ds)
    for keyword, value in changes.items():
        if value is None:
            if keyword in out:
                delattr(out, keyword)
        else:
            setattr(out, keyword, value)
    return out


def synthetic_radiograph(
    rows: int = 64, columns: int = 48, *, view: str | None = "PA", study_uid: str | None = None,
    photometric: str = "MONOCHROME2", modality: str = "DX", patient_id: str = "SYN-PAT-0001",
) -> Dataset:
    """A small uncompressed DX object with a bright vertical band (a 'mediastinum') in the middle."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "Synthetic^Patient", patient_id, "ACC-SYN-1"
    ds.StudyDate = "20240102"
    if view is not None:
        ds.ViewPosition = view
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = np.full((rows, columns), 500, dtype=np.uint16)
    pixels[:, columns // 3 : 2 * columns // 3] = 3500
    if photometric == "MONOCHROME1":
        pixels = (4095 - pixels).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


#: SOP classes of objects a PACS keeps beside a study's images, with their modality.
COMPREHENSIVE_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.33"
KEY_OBJECT_SELECTION_STORAGE = "1.2.840.10008.5.1.4.1.1.88.59"
GRAYSCALE_PRESENTATION_STATE_STORAGE = "1.2.840.10008.5.1.4.1.1.11.1"
NON_IMAGE_MODALITY = {COMPREHENSIVE_SR_STORAGE: "SR", KEY_OBJECT_SELECTION_STORAGE: "KO", GRAYSCALE_PRESENTATION_STATE_STORAGE: "PR"}


def synthetic_non_image(sop_class: str = COMPREHENSIVE_SR_STORAGE, *, study_uid: str | None = None) -> Dataset:
    """A small object without pixel data (an SR, a Key Object Selection, a presentation state), of
    the kind a PACS holds beside a study's images; enough of its module to be stored and routed."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = NON_IMAGE_MODALITY.get(sop_class, "OT")
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "Synthetic^Patient", "SYN-PAT-0001", "ACC-SYN-1"
    ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20240102", 99, 1
    if ds.Modality in ("SR", "KO"):
        ds.ValueType = "CONTAINER"
        ds.ContinuityOfContent = "SEPARATE"
        concept = Dataset()
        concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "18748-4", "LN", "Diagnostic imaging report"
        ds.ConceptNameCodeSequence = [concept]
        ds.CompletionFlag, ds.VerificationFlag = "PARTIAL", "UNVERIFIED"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def bad_dicom_corpus(valid: Dataset) -> dict[str, tuple[bytes, RefusalReason]]:
    """Inputs the gateway must refuse, each with the reason it must give."""
    good = dicom_bytes(valid)
    no_decoder = with_changes(valid)
    no_decoder.file_meta.TransferSyntaxUID = JPEGLossless  # no JPEG-lossless decoder is installed
    no_decoder.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8\xff\xc3" + b"\x00" * 64])
    no_decoder["PixelData"].VR = "OB"
    return {
        "truncated": (good[: len(good) * 2 // 3], RefusalReason.UNREADABLE),
        "random_bytes": (os.urandom(4096), RefusalReason.UNREADABLE),
        "ct_modality": (dicom_bytes(with_changes(valid, Modality="CT")), RefusalReason.UNSUPPORTED_MODALITY),
        "ct_sop_class": (
            dicom_bytes(_with_sop_class(valid, CT_IMAGE_STORAGE, "CT")), RefusalReason.UNSUPPORTED_SOP_CLASS
        ),
        "missing_pixel_data": (dicom_bytes(with_changes(valid, PixelData=None)), RefusalReason.MISSING_PIXEL_DATA),
        "no_decoder": (dicom_bytes(no_decoder), RefusalReason.UNSUPPORTED_TRANSFER_SYNTAX),
    }


def _with_sop_class(ds: Dataset, sop_class: str, modality: str) -> Dataset:
    out = with_changes(ds, SOPClassUID=sop_class, Modality=modality)
    out.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    return out
