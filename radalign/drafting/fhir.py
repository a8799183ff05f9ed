"""The draft as a FHIR DiagnosticReport (R5 by default, R4B on request), built and validated by
`fhir.resources` (pydantic models of the official FHIR definitions).

Coding: LOINC 18748-4 "Diagnostic imaging study" is the report-document code that US Core and
IHE use for imaging reports of any modality; the chest-specific LOINC codes (36643-5 "XR Chest
2 Views", 36554-4 "XR Chest Single view", ...) name the *procedure* and depend on the number of
views, which the draft does not know, so they are left to the order (ServiceRequest). The
category carries LOINC LP29684-5 and HL7 v2-0074 RAD ("Radiology").

Identifiers enter only here, from the re-identification mapping: the subject (patient id and
name), the order (basedOn: ServiceRequest with the accession number) and the imaging study.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any, Literal

from radalign.drafting.identity import StudyIdentity
from schemas.events import ReportDrafted

LOINC = "http://loinc.org"
REPORT_CODE = {"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}
CATEGORY = [
    {"system": LOINC, "code": "LP29684-5", "display": "Radiology"},
    {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"},
]
ACCESSION_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN", "display": "Accession ID"}]}
DRAFT_NOTE = "Preliminary draft written by RadAlign Stream (AI); not verified by a radiologist."
FhirVersion = Literal["R5", "R4B"]


def report_text(report: ReportDrafted) -> str:
    """The human-readable report (presentedForm, SR text)."""
    return f"FINDINGS:\n{report.findings}\n\nIMPRESSION:\n{report.impression}\n"


def _person_display(dicom_name: str) -> str:
    # DICOM PN "Family^Given^Middle" -> "Given Middle Family"
    parts = [p for p in dicom_name.split("^")[:3]]
    family, given = (parts + ["", ""])[:2]
    rest = " ".join(parts[2:])
    return " ".join(p for p in (given, rest, family) if p).strip()


def diagnostic_report_dict(report: ReportDrafted, identity: StudyIdentity | None, *, issued: datetime | None = None, version: FhirVersion = "R5") -> dict[str, Any]:
    """The DiagnosticReport as a JSON-ready dict (not yet validated; see `diagnostic_report`)."""
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": report.report_id,
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{report.report_id}"}],
        "status": "preliminary",
        "category": [{"coding": CATEGORY}],
        "code": {"coding": [REPORT_CODE], "text": "Chest radiograph report"},
        "effectiveDateTime": report.study.received_at.isoformat(),
        "issued": (issued or datetime.now(timezone.utc)).isoformat(),
        "conclusion": report.impression,
        "presentedForm": [
            {
                "contentType": "text/plain; charset=utf-8",
                "language": "en",
                "data": base64.b64encode(report_text(report).encode("utf-8")).decode("ascii"),
                "title": "Preliminary chest radiograph report",
            }
        ],
    }
    if version == "R5":
        resource["note"] = [{"text": DRAFT_NOTE}]
    if identity is not None:
        based_on: dict[str, Any] = {"type": "ServiceRequest"}
        if identity.service_request_id:
            based_on["reference"] = f"ServiceRequest/{identity.service_request_id}"
        if identity.accession_number:
            based_on["identifier"] = {"type": ACCESSION_TYPE, "value": identity.accession_number}
        if len(based_on) > 1:
            resource["basedOn"] = [based_on]
        if identity.patient_id or identity.patient_name:
            subject: dict[str, Any] = {"type": "Patient"}
            if identity.patient_id:
                subject["identifier"] = {"value": identity.patient_id}
                if identity.issuer_of_patient_id:
                    subject["identifier"]["assigner"] = {"display": identity.issuer_of_patient_id}
            if identity.patient_name:
                subject["display"] = _person_display(identity.patient_name)
            resource["subject"] = subject
        study = {"type": "ImagingStudy", "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{identity.study_instance_uid}"}}
        resource["study" if version == "R5" else "imagingStudy"] = [study]
    return resource


def diagnostic_report(report: ReportDrafted, identity: StudyIdentity | None, *, issued: datetime | None = None, version: FhirVersion = "R5") -> Any:
    """The validated `fhir.resources` DiagnosticReport model (raises pydantic.ValidationError)."""
    if version == "R5":
        from fhir.resources.diagnosticreport import DiagnosticReport
    elif version == "R4B":
        from fhir.resources.R4B.diagnosticreport import DiagnosticReport  # type: ignore[no-redef]
    else:
        raise ValueError(f"unsupported FHIR version {version!r}")
    return DiagnosticReport.model_validate(diagnostic_report_dict(report, identity, issued=issued, version=version))


def diagnostic_report_json(report: ReportDrafted, identity: StudyIdentity | None, *, issued: datetime | None = None, version: FhirVersion = "R5") -> str:
    return diagnostic_report(report, identity, issued=issued, version=version).model_dump_json(exclude_none=True)
