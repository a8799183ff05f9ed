"""FHIR DiagnosticReport and DICOM Basic Text SR outputs, re-identified at the edge."""

import asyncio
import base64
from datetime import date, datetime, timezone
from io import BytesIO

import highdicom as hd
import pytest
from drafting_helpers import make_event
from pydantic import ValidationError
from pydicom import dcmread

from radalign.config import Settings
from radalign.drafting.fhir import diagnostic_report, diagnostic_report_dict, report_text
from radalign.drafting.identity import InstanceIdentity, StudyIdentity
from radalign.drafting.sr import BASIC_TEXT_SR, basic_text_sr, basic_text_sr_bytes, read_sr_text
from schemas.events import Certainty, Observation
from services.drafting.core import DraftingCore

LABELS = {Observation.CARDIOMEGALY: Certainty.PRESENT, Observation.PLEURAL_EFFUSION: Certainty.ABSENT}
CASES = [("iu-1", "The heart is enlarged. No pleural effusion.", "Cardiomegaly.")]
IDENTITY = StudyIdentity(
    study_key="st-0123456789abcdef", study_instance_uid="1.2.826.0.1.3680043.8.498.1", patient_id="MRN-0042",
    patient_name="Müller^Anna", issuer_of_patient_id="HOSP", birth_date=date(1960, 5, 1), sex="F",
    accession_number="ACC-9", study_id="S1", service_request_id="order-77",
    instances=(InstanceIdentity("1.2.826.0.1.3680043.8.498.3", "1.2.826.0.1.3680043.8.498.2", "1.2.840.10008.5.1.4.1.1.1"),),
)
ISSUED = datetime(2026, 11, 27, 21, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def report():
    return asyncio.run(DraftingCore(Settings(), None).draft(make_event(LABELS, CASES)))


@pytest.mark.parametrize("version", ["R5", "R4B"])
def test_fhir_diagnostic_report_validates_and_carries_the_draft(report, version):
    resource = diagnostic_report(report, IDENTITY, issued=ISSUED, version=version)
    data = resource.model_dump(mode="json", exclude_none=True)
    assert data["status"] == "preliminary" and data["id"] == report.report_id
    assert data["code"]["coding"][0] == {"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}
    assert data["conclusion"] == report.impression
    form = data["presentedForm"][0]
    assert form["contentType"].startswith("text/plain")
    assert base64.b64decode(form["data"]).decode() == report_text(report)
    based_on = data["basedOn"][0]
    assert based_on["reference"] == "ServiceRequest/order-77" and based_on["identifier"]["value"] == "ACC-9"
    assert based_on["identifier"]["type"]["coding"][0]["code"] == "ACSN"
    assert data["subject"]["identifier"]["value"] == "MRN-0042" and data["subject"]["display"] == "Anna Müller"
    studies = data["study" if version == "R5" else "imagingStudy"]
    assert studies[0]["identifier"]["value"] == "urn:oid:1.2.826.0.1.3680043.8.498.1"


def test_fhir_without_identity_has_no_subject(report):
    data = diagnostic_report(report, None, issued=ISSUED).model_dump(mode="json", exclude_none=True)
    assert "subject" not in data and "basedOn" not in data


def test_fhir_library_refuses_an_invalid_report(report):
    # the structure is checked (required elements, element names, types); value sets are not
    from fhir.resources.diagnosticreport import DiagnosticReport

    valid = diagnostic_report_dict(report, IDENTITY, issued=ISSUED)
    without_code = {k: v for k, v in valid.items() if k != "code"}
    for broken in (without_code, valid | {"imagingStudy": valid["study"]}, valid | {"issued": "yesterday"}):
        with pytest.raises(ValidationError):
            DiagnosticReport.model_validate(broken)


def test_basic_text_sr_round_trips_through_pydicom_and_highdicom(report):
    data = basic_text_sr_bytes(report, IDENTITY, created=ISSUED)
    ds = dcmread(BytesIO(data))
    assert ds.SOPClassUID == BASIC_TEXT_SR and ds.file_meta.MediaStorageSOPClassUID == BASIC_TEXT_SR
    assert ds.VerificationFlag == "UNVERIFIED" and ds.PreliminaryFlag == "PRELIMINARY" and ds.CompletionFlag == "PARTIAL"
    assert ds.PatientName == "Müller^Anna" and ds.PatientID == "MRN-0042" and ds.PatientSex == "F"
    assert ds.PatientBirthDate == "19600501" and ds.AccessionNumber == "ACC-9"
    assert ds.StudyInstanceUID == IDENTITY.study_instance_uid and ds.Modality == "SR"
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == IDENTITY.instances[0].sop_instance_uid
    text = read_sr_text(data)
    assert text["findings"] == report.findings and text["impression"] == report.impression
    # highdicom parses the whole content tree back (each content item validated)
    tree = hd.sr.ContentSequence.from_sequence(ds.ContentSequence)
    assert [item.name.meaning for item in tree] == ["Findings", "Impressions"]


def test_sr_uids_are_stable_per_report_and_evidence_optional(report):
    first = basic_text_sr(report, IDENTITY, created=ISSUED)
    again = basic_text_sr(report, IDENTITY, created=ISSUED)
    assert first.SOPInstanceUID == again.SOPInstanceUID and first.SeriesInstanceUID == again.SeriesInstanceUID
    bare = StudyIdentity(study_key=IDENTITY.study_key, study_instance_uid=IDENTITY.study_instance_uid)
    ds = dcmread(BytesIO(basic_text_sr_bytes(report, bare, created=ISSUED)))
    assert "CurrentRequestedProcedureEvidenceSequence" not in ds and ds.PatientID == ""
