"""FHIR DiagnosticReport and DICOM Basic Text SR outputs, re-identified at the edge."""

import asyncio
import base64
import dataclasses
import shutil
import subprocess
from datetime import UTC, date, datetime
from io import BytesIO

import highdicom as hd
import pytest
from drafting_helpers import make_event
from pydantic import ValidationError
from pydicom import dcmread

from radalign.config import Settings
from radalign.drafting.core import DraftingCore
from radalign.reports.fhir import (
    AIAST,
    DEFAULT_PATIENT_SYSTEM,
    US_CORE_DR_NOTE,
    diagnostic_report,
    diagnostic_report_dict,
    report_text,
    study_effective,
    transaction_bundle,
    validate,
)
from radalign.reports.reidentification import InstanceIdentity, StudyIdentity
from radalign.reports.sr import (
    BASIC_TEXT_SR,
    COMPREHENSIVE_3D_SR,
    ai_results_sr,
    ai_results_sr_bytes,
    basic_text_sr,
    basic_text_sr_bytes,
    finding_concept,
    read_ai_results,
    read_sr_text,
)
from schemas.events import CasesRetrieved, Certainty, Observation

LABELS = {Observation.CARDIOMEGALY: Certainty.PRESENT, Observation.PLEURAL_EFFUSION: Certainty.ABSENT}
CASES = [("iu-1", "The heart is enlarged. No pleural effusion.", "Cardiomegaly.")]
IDENTITY = StudyIdentity(
    study_key="st-0123456789abcdef", study_instance_uid="1.2.826.0.1.3680043.8.498.1", patient_id="MRN-0042",
    patient_name="Müller^Anna", issuer_of_patient_id="HOSP", birth_date=date(1960, 5, 1), sex="F",
    accession_number="ACC-9", study_id="S1", service_request_id="order-77", study_date="20261127", study_time="101530.25",
    timezone_offset="+0100", requested_procedure_id="RP-3",
    instances=(InstanceIdentity("1.2.826.0.1.3680043.8.498.3", "1.2.826.0.1.3680043.8.498.2", "1.2.840.10008.5.1.4.1.1.1"),),
)
ISSUED = datetime(2026, 11, 27, 21, 0, tzinfo=UTC)
#: The assessment line of the LABELS report: Cardiomegaly and Pleural Effusion assessed, the rest not.
ASSESSED_LINE = (
    "AI assessment: assessed Cardiomegaly, Pleural Effusion; not assessed: No Finding, Enlarged Cardiomediastinum, "
    "Lung Opacity, Lung Lesion, Edema, Consolidation, Pneumonia, Atelectasis, Pneumothorax, Pleural Other, Fracture, "
    "Support Devices."
)
OOD_LINE = "AI assessment: none (reason: no frontal view); the model made no finding claim."


@pytest.fixture(scope="module")
def report():
    return asyncio.run(DraftingCore(Settings(), None).draft(make_event(LABELS, CASES)))


@pytest.fixture(scope="module")
def ood_report():
    event = make_event(LABELS, CASES)
    event = CasesRetrieved.model_validate(
        {**event.model_dump(), "concepts": [], "not_assessed": [o.value for o in Observation], "ood": {"reason": "lateral_only"}}
    )
    return asyncio.run(DraftingCore(Settings(), None).draft(event))


def _delivered_texts(report) -> dict[str, str]:
    """What reaches the EHR and the PACS: presentedForm (decoded), narrative, SR text."""
    dr = diagnostic_report(report, IDENTITY, issued=ISSUED).model_dump(mode="json", exclude_none=True)
    sr = read_sr_text(basic_text_sr_bytes(report, IDENTITY, created=ISSUED))
    return {"presented": base64.b64decode(dr["presentedForm"][0]["data"]).decode(), "narrative": dr["text"]["div"], "sr": sr["assessment"]}


def test_every_delivered_text_says_what_was_assessed_and_what_was_not(report):
    assert report.not_assessed and report.concepts
    texts = _delivered_texts(report)
    assert texts["presented"].rstrip("\n").endswith("\n\n" + ASSESSED_LINE)
    assert f"<p>{ASSESSED_LINE}</p>" in texts["narrative"]
    assert texts["narrative"].index(ASSESSED_LINE) > texts["narrative"].index("IMPRESSION:")
    assert texts["sr"] == ASSESSED_LINE
    # the bundle the delivery stage sends carries the same text
    bundle = transaction_bundle(report, IDENTITY, issued=ISSUED)
    dr = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    assert base64.b64decode(dr["presentedForm"][0]["data"]).decode() == texts["presented"]
    assert ASSESSED_LINE in dr["text"]["div"]
    # no identifier of the patient, study or order is in it
    for value in ("MRN-0042", "Müller", "Anna", "ACC-9", IDENTITY.study_instance_uid, report.study.study_key, report.report_id):
        assert value not in ASSESSED_LINE


def test_ood_delivered_text_says_the_model_made_no_claim(ood_report):
    assert ood_report.ood is not None and ood_report.needs_review
    texts = _delivered_texts(ood_report)
    assert texts["presented"].rstrip("\n").endswith("\n\n" + OOD_LINE)
    assert f"<p>{OOD_LINE}</p>" in texts["narrative"]
    assert texts["sr"] == OOD_LINE


@pytest.mark.parametrize("version", ["R5", "R4"])
def test_fhir_diagnostic_report_validates_and_carries_the_draft(report, version):
    resource = diagnostic_report(report, IDENTITY, issued=ISSUED, version=version)
    data = resource.model_dump(mode="json", exclude_none=True)
    assert data["status"] == "preliminary" and data["id"] == report.report_id
    assert data["code"]["coding"][0] == {"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}
    assert data["conclusion"] == report.impression
    form = data["presentedForm"][0]
    assert form["contentType"].startswith("text/plain")
    assert base64.b64decode(form["data"]).decode() == report_text(report)
    assert report_text(report) == f"FINDINGS:\n{report.findings}\n\nIMPRESSION:\n{report.impression}\n\n{ASSESSED_LINE}\n"
    based_on = data["basedOn"][0]
    assert based_on["reference"] == "ServiceRequest/order-77" and based_on["identifier"]["value"] == "ACC-9"
    assert based_on["identifier"]["type"]["coding"][0]["code"] == "ACSN"
    assert data["subject"]["identifier"]["value"] == "MRN-0042" and data["subject"]["display"] == "Anna Müller"
    assert data["subject"]["identifier"]["system"] == DEFAULT_PATIENT_SYSTEM  # issuer "HOSP" is not a URI
    assert data["effectiveDateTime"] == "2026-11-27T10:15:30+01:00"  # StudyDate/Time/TimezoneOffsetFromUTC
    assert data["meta"]["security"] == [AIAST]
    assert data["text"]["status"] == "generated" and "Cardiomegaly." in data["text"]["div"]
    # the model called Cardiomegaly present: SNOMED CT 8186001 next to the CheXpert code
    assert {c["code"] for c in data["conclusionCode"][0]["coding"]} == {"Cardiomegaly", "8186001"}
    studies = data["study" if version == "R5" else "imagingStudy"]
    assert studies[0]["identifier"]["value"] == "urn:oid:1.2.826.0.1.3680043.8.498.1"
    # US Core is an R4 IG: the DiagnosticReport Note profile on R4 only
    assert data["meta"].get("profile") == ([US_CORE_DR_NOTE] if version == "R4" else None)


def test_fhir_without_identity_has_no_subject(report):
    data = diagnostic_report(report, None, issued=ISSUED).model_dump(mode="json", exclude_none=True)
    assert "subject" not in data and "basedOn" not in data


def test_fhir_library_refuses_an_invalid_report(report):
    # the structure is checked (required elements, element names, types); value sets are not
    from fhir.resources.diagnosticreport import DiagnosticReport

    valid = diagnostic_report_dict(report, IDENTITY, issued=ISSUED, version="R5")
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
    assert text["assessment"] == ASSESSED_LINE
    # highdicom parses the whole content tree back (each content item validated)
    tree = hd.sr.ContentSequence.from_sequence(ds.ContentSequence)
    names = [item.name.meaning for item in tree]
    assert names[-3:] == ["Findings", "Impressions", "Current Procedure Descriptions"]
    assessment = tree[-1].ContentSequence[0]
    assert assessment.name.meaning == "Procedure Description" and assessment.value == ASSESSED_LINE
    assert "Device Observer UID" in names and "Observer Type" in names  # TID 1002/1004: the AI observes


def test_sr_uids_are_stable_per_report_and_evidence_optional(report):
    first = basic_text_sr(report, IDENTITY, created=ISSUED)
    again = basic_text_sr(report, IDENTITY, created=ISSUED)
    assert first.SOPInstanceUID == again.SOPInstanceUID and first.SeriesInstanceUID == again.SeriesInstanceUID
    bare = StudyIdentity(study_key=IDENTITY.study_key, study_instance_uid=IDENTITY.study_instance_uid)
    ds = dcmread(BytesIO(basic_text_sr_bytes(report, bare, created=ISSUED)))
    assert "CurrentRequestedProcedureEvidenceSequence" not in ds and ds.PatientID == ""


def _dicom_validator_report(path) -> str:
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("status", ["preliminary", "final"])
def test_sr_passes_dciodvfy(report, tmp_path, status):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools; scripts/bootstrap.sh does)")
    path = tmp_path / "sr.dcm"
    extra = {"status": "final", "verifier": "Rad^Ann", "verified_at": ISSUED, "document_version": "v2"} if status == "final" else {}
    path.write_bytes(basic_text_sr_bytes(report, IDENTITY, created=ISSUED, **extra))
    out = _dicom_validator_report(path)
    assert "BasicTextSR" in out, out  # the IOD it recognised
    assert "Error" not in out and "Warning" not in out, out
    # the validator does catch a broken SR (so the assertion above can fail)
    ds = dcmread(path)
    del ds.CompletionFlag
    ds.save_as(tmp_path / "broken.dcm")
    assert "Error" in _dicom_validator_report(tmp_path / "broken.dcm")


def test_sr_carries_study_time_order_and_device_observer(report):
    ds = basic_text_sr(report, IDENTITY, created=ISSUED)
    assert ds.StudyDate == "20261127" and ds.StudyTime == "101530.25"
    request = ds.ReferencedRequestSequence[0]
    assert request.AccessionNumber == "ACC-9" and request.RequestedProcedureID == "RP-3"
    assert request.StudyInstanceUID == IDENTITY.study_instance_uid
    no_order = dataclasses.replace(IDENTITY, accession_number="", requested_procedure_id="")
    assert "ReferencedRequestSequence" not in basic_text_sr(report, no_order, created=ISSUED)
    tree = hd.sr.ContentSequence.from_sequence(ds.ContentSequence)
    observer = {item.name.meaning: item.value for item in tree if item.relationship_type == hd.sr.RelationshipTypeValues.HAS_OBS_CONTEXT}
    assert observer["Observer Type"].meaning == "Device"
    assert report.model_name in observer["Device Observer Model Name"]


def test_final_sr_is_verified_and_a_new_instance(report):
    draft = basic_text_sr(report, IDENTITY, created=ISSUED)
    final = basic_text_sr(report, IDENTITY, created=ISSUED, status="final", verifier="Rad^Ann", document_version="v2")
    assert (final.VerificationFlag, final.PreliminaryFlag, final.CompletionFlag) == ("VERIFIED", "FINAL", "COMPLETE")
    assert final.VerifyingObserverSequence[0].VerifyingObserverName == "Rad^Ann"
    assert final.SOPInstanceUID != draft.SOPInstanceUID and final.StudyInstanceUID == draft.StudyInstanceUID
    with pytest.raises(ValueError, match="verifying"):
        basic_text_sr(report, IDENTITY, created=ISSUED, status="final")


def test_effective_time_falls_back_to_the_receipt_time(report):
    assert study_effective(None, report.study.received_at) == report.study.received_at.isoformat()
    assert study_effective(dataclasses.replace(IDENTITY, study_time=""), report.study.received_at) == "2026-11-27"
    assert study_effective(dataclasses.replace(IDENTITY, timezone_offset=""), report.study.received_at) == "2026-11-27T10:15:30+00:00"


@pytest.mark.parametrize("version", ["R5", "R4"])
def test_fhir_transaction_bundle_is_conditional_and_provenanced(report, version):
    bundle = transaction_bundle(report, IDENTITY, issued=ISSUED, version=version)
    validate(bundle, version)  # the whole Bundle, every resource inside, with fhir.resources
    by_type: dict[str, list[dict]] = {}
    for entry in bundle["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry)
    assert set(by_type) == {"Device", "Observation", "DiagnosticReport", "Provenance"}
    for kind in ("Device", "Observation", "DiagnosticReport"):
        for entry in by_type[kind]:
            assert entry["request"]["method"] == "PUT" and entry["request"]["url"].startswith(f"{kind}?identifier=urn:ietf:rfc:3986|urn:uuid:")
    assessed = [c for c in report.concepts if c.observation not in report.not_assessed]
    observations = by_type["Observation"]
    assert len(observations) == len(assessed) and all(o["resource"]["meta"]["security"] == [AIAST] for o in observations)
    dr_entry = by_type["DiagnosticReport"][0]
    dr = dr_entry["resource"]
    assert sorted(r["reference"] for r in dr["result"]) == sorted(o["fullUrl"] for o in observations)
    provenance = by_type["Provenance"][0]["resource"]
    device_url = by_type["Device"][0]["fullUrl"]
    assert provenance["agent"][0]["who"]["reference"] == device_url
    assert dr_entry["fullUrl"] in {t["reference"] for t in provenance["target"]}
    versions = {v["type"]["text"]: v["value"] for v in by_type["Device"][0]["resource"]["version"]}
    assert versions["concept model"] == f"{report.model_name} {report.model_version}" and versions["drafter"] == report.drafter
    again = transaction_bundle(report, IDENTITY, issued=ISSUED, version=version)
    assert [e["request"]["url"] for e in again["entry"]] == [e["request"]["url"] for e in bundle["entry"]]  # idempotent keys
    final = transaction_bundle(report, IDENTITY, issued=ISSUED, version=version, status="final", verifier="Rad^Ann", document_version="v2")
    final_dr = next(e for e in final["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    assert final_dr["request"]["url"] == dr_entry["request"]["url"] and final_dr["resource"]["status"] == "final"


# -- the AI's results as a TID 1500 Comprehensive 3D SR ------------------------------------------

CR_IMAGE = dataclasses.replace(
    IDENTITY.instances[0], modality="CR", rows=2048, columns=2500, patient_orientation=("L", "F"), imager_pixel_spacing=(0.139, 0.139)
)


@pytest.mark.parametrize("with_library", [False, True])
def test_ai_results_sr_reads_back_with_highdicom(report, with_library):
    identity = dataclasses.replace(IDENTITY, instances=(CR_IMAGE,)) if with_library else IDENTITY
    data = ai_results_sr_bytes(report, identity, created=ISSUED)
    assert data is not None
    sr = hd.sr.srread(BytesIO(data))
    assert isinstance(sr, hd.sr.Comprehensive3DSR) and sr.SOPClassUID == COMPREHENSIVE_3D_SR
    assert sr.PatientID == "MRN-0042" and sr.StudyInstanceUID == IDENTITY.study_instance_uid and sr.VerificationFlag == "UNVERIFIED"
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    # only what the model claimed: the assessed findings, with their state
    assessed = {c.observation for c in report.concepts} - set(report.not_assessed)
    read = read_ai_results(data)
    assert read.pop("algorithm") == f"{report.model_name} {report.model_version}"  # TID 4019
    assert read == {finding_concept(o).meaning: {"present": "Present", "absent": "Absent", "uncertain": "Equivocal"}[LABELS[o].value] for o in assessed}
    (group,) = sr.content.get_image_measurement_groups()
    assert [e.name for e in group.get_qualitative_evaluations()] == [finding_concept(o) for o in Observation if o in assessed]
    assert group.source_images[0].referenced_sop_instance_uid == IDENTITY.instances[0].sop_instance_uid
    library = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "111028"]  # DCM Image Library
    assert len(library) == (1 if with_library else 0)
    # the same report gives the same instance (a redelivery stores it again, no duplicate)
    assert dcmread(BytesIO(ai_results_sr_bytes(report, identity, created=ISSUED))).SOPInstanceUID == sr.SOPInstanceUID


def test_no_ai_results_sr_when_the_model_claimed_nothing(ood_report):
    assert ood_report.concepts == [] and ai_results_sr(ood_report, IDENTITY) is None and ai_results_sr_bytes(ood_report, IDENTITY) is None


@pytest.mark.parametrize("with_library", [False, True])
def test_ai_results_sr_passes_dciodvfy(report, tmp_path, with_library):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools; scripts/bootstrap.sh does)")
    identity = dataclasses.replace(IDENTITY, instances=(CR_IMAGE,)) if with_library else IDENTITY
    path = tmp_path / "ai.dcm"
    path.write_bytes(ai_results_sr_bytes(report, identity, created=ISSUED) or b"")
    out = _dicom_validator_report(path)
    assert "Comprehensive3DSR" in out, out
    assert "Error" not in out and "Warning" not in out, out


def test_a_free_text_study_id_becomes_a_valid_derived_study_uid():
    from pydicom.uid import UID

    from radalign.reports.reidentification import dicom_study_uid

    real = "1.2.826.0.1.3680043.8.498.1"
    assert dicom_study_uid(real) == real  # a DICOM study keeps its UID
    derived = dicom_study_uid("DEMO-20261207-STUDY-007")
    assert UID(derived).is_valid and derived.startswith("2.25.") and "DEMO" not in derived
    assert derived == dicom_study_uid("DEMO-20261207-STUDY-007") != dicom_study_uid("DEMO-20261207-STUDY-008")  # stable, distinct
