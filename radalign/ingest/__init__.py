"""Intake: DICOM/PNG/JPEG reading and refusal rules, de-identification, study assembly, pseudonym store."""

from radalign.ingest.assembly import ReceivedInstance, StudyAssembler
from radalign.ingest.deid import OriginalIdentifiers, Pseudonymizer, deidentify, encode_dicom
from radalign.ingest.dicom import DicomFacts, check_dicom, decode_dicom_pixels, read_dicom
from radalign.ingest.images import resize_and_pad
from radalign.ingest.pseudonyms import InMemoryPseudonymStore, PostgresPseudonymStore, PseudonymRecord, PseudonymStore
from radalign.ingest.refusal import Refusal, RefusalReason

__all__ = [
    "DicomFacts", "InMemoryPseudonymStore", "OriginalIdentifiers", "PostgresPseudonymStore", "Pseudonymizer",
    "PseudonymRecord", "PseudonymStore", "ReceivedInstance", "Refusal", "RefusalReason", "StudyAssembler",
    "check_dicom", "decode_dicom_pixels", "deidentify", "encode_dicom", "read_dicom", "resize_and_pad",
]
