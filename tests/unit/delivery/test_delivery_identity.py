"""The identity mapping carries what the SR and FHIR need: study date/time, the order, the patient."""

from datetime import date

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radalign.ingest.deid import original_identifiers
from radalign.reports.reidentification import identity_from_row


def _chest_header() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.SOPClassUID = pydicom.uid.ComputedRadiographyImageStorage
    ds.PatientID, ds.PatientName, ds.IssuerOfPatientID = "MRN-5", "Doe^Jane", "1.2.3.4"
    ds.PatientBirthDate, ds.PatientSex = "19700102", "F"
    ds.AccessionNumber, ds.RequestedProcedureID, ds.StudyID = "ACC-5", "RP-5", "S5"
    ds.StudyDate, ds.StudyTime, ds.TimezoneOffsetFromUTC = "20261127", "101530", "+0100"
    ds.ReferringPhysicianName = "Ref^Rita"
    return ds


def test_gateway_routing_facts_become_the_output_identity():
    ds = _chest_header()
    original = original_identifiers(ds)
    row = {"study_key": "st-0000000000000005", "study_instance_uid": original.study_uid, "patient_id": original.patient_id,
           "patient_name": original.patient_name, "accession_number": original.accession_number}
    identity = identity_from_row(row, original.routing, [])
    assert (identity.study_date, identity.study_time, identity.timezone_offset) == ("20261127", "101530", "+0100")
    assert identity.birth_date == date(1970, 1, 2) and identity.sex == "F" and identity.issuer_of_patient_id == "1.2.3.4"
    assert identity.requested_procedure_id == "RP-5" and identity.study_id == "S5" and identity.referring_physician_name == "Ref^Rita"


def test_missing_or_malformed_facts_are_left_empty():
    identity = identity_from_row(
        {"study_key": "st-0000000000000006", "study_instance_uid": "1.2", "patient_id": "", "patient_name": "", "accession_number": ""},
        {"PatientBirthDate": "1970-13-45", "PatientSex": "unknown"}, [],
    )
    assert identity.birth_date is None and identity.sex == "" and identity.study_date == ""
