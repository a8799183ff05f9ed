"""The report as FHIR resources (R5 by default, R4 on request), built and validated by
`fhir.resources` (pydantic models of the official FHIR definitions).

Coding: LOINC 18748-4 "Diagnostic imaging study" is the report-document code that US Core and
IHE use for imaging reports of any modality; the chest-specific LOINC codes (36643-5 "XR Chest
2 Views", 36554-4 "XR Chest Single view", ...) name the *procedure* and depend on the number of
views, which the draft does not know, so they are left to the order (ServiceRequest). The
category carries LOINC LP29684-5 and HL7 v2-0074 RAD ("Radiology").

What a consumer gets (`transaction_bundle`, what the delivery stage sends):
- DiagnosticReport: subject by identifier (with a system), narrative `text` and `presentedForm`
  (findings, impression, then the AI assessment line: what the model assessed and what it did
  not, `radalign.drafting.assessment`), `conclusion` and
  `conclusionCode` (the findings the model called present), `effectiveDateTime` = the study's
  date and time, `result` = one coded Observation per assessed finding, the AIAST security label;
- Observation per assessed finding: the CheXpert observation (and SNOMED CT where the mapping is
  unambiguous), value present / absent / equivocal, the model's probability as a component;
- Device: the AI (concept model, drafter, prompt and pipeline versions);
- Provenance: the report and its observations, produced by that Device.
Every resource is written with a conditional update (PUT by identifier; the Provenance, which has
no identifier element, by a client-assigned id), so a redelivery updates
the same resources instead of duplicating them; a final (signed) version updates them in place.

R4: fhir.resources ships R4B models, which are wire-compatible with R4 for these five resources;
`version="R4"` validates with them (R4B is accepted as an alias).

Identifiers enter only here, from the re-identification mapping: the subject, the order (basedOn:
ServiceRequest with the accession number) and the imaging study.
"""

from __future__ import annotations

import base64
import html
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal
from urllib.parse import quote

from radalign.drafting.assessment import assessment_line
from radalign.drafting.identity import StudyIdentity
from schemas.events import Certainty, ConceptScore, Observation, ReportDrafted

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
URI_SYSTEM = "urn:ietf:rfc:3986"
#: The 14 CheXpert observations as codes (no standard code system has all of them).
CHEXPERT_SYSTEM = "urn:radalign:fhir:CodeSystem:chexpert-observation"
#: Patient identifier system when the issuer is unknown; set a destination's own in production.
DEFAULT_PATIENT_SYSTEM = "urn:radalign:fhir:NamingSystem:patient-id"
REPORT_CODE = {"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}
CATEGORY = [
    {"system": LOINC, "code": "LP29684-5", "display": "Radiology"},
    {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"},
]
ACCESSION_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN", "display": "Accession ID"}]}
MRN_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR", "display": "Medical record number"}]}
#: HL7 security label "Artificial Intelligence asserted" (the AI transparency convention).
AIAST = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "AIAST", "display": "Artificial Intelligence asserted"}
IMAGING_CATEGORY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging", "display": "Imaging"}]}
DRAFT_NOTE = "Preliminary draft written by RadAlign Stream (AI); not verified by a radiologist."
# SNOMED CT only where one concept clearly matches CheXpert's observation; the others (Lung
# Opacity, Lung Lesion, Enlarged Cardiomediastinum, Pleural Other, Support Devices, No Finding)
# carry the CheXpert code alone rather than a guessed SNOMED concept.
SNOMED_FINDINGS: dict[Observation, tuple[str, str]] = {
    Observation.CARDIOMEGALY: ("8186001", "Cardiomegaly"),
    Observation.EDEMA: ("19242006", "Pulmonary edema"),
    Observation.CONSOLIDATION: ("95436008", "Lung consolidation"),
    Observation.PNEUMONIA: ("233604007", "Pneumonia"),
    Observation.ATELECTASIS: ("46621007", "Atelectasis"),
    Observation.PNEUMOTHORAX: ("36118008", "Pneumothorax"),
    Observation.PLEURAL_EFFUSION: ("60046008", "Pleural effusion"),
    Observation.FRACTURE: ("125605004", "Fracture of bone"),
}
STATE_VALUES: dict[Certainty, tuple[str, str]] = {
    Certainty.PRESENT: ("52101004", "Present"),
    Certainty.ABSENT: ("2667000", "Absent"),
    Certainty.UNCERTAIN: ("42425007", "Equivocal"),
}
FhirVersion = Literal["R5", "R4", "R4B"]
ReportStatus = Literal["preliminary", "final"]


def report_text(report: ReportDrafted) -> str:
    """The human-readable report (presentedForm), ending with the AI assessment line: what the
    model assessed and what it did not (`radalign.drafting.assessment`)."""
    return f"FINDINGS:\n{report.findings}\n\nIMPRESSION:\n{report.impression}\n\n{assessment_line(report)}\n"


def _person_display(dicom_name: str) -> str:
    # DICOM PN "Family^Given^Middle" -> "Given Middle Family"
    parts = [p for p in dicom_name.split("^")[:3]]
    family, given = (parts + ["", ""])[:2]
    rest = " ".join(parts[2:])
    return " ".join(p for p in (given, rest, family) if p).strip()


def _urn(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'radalign:' + ':'.join(parts))}"


def patient_identifier_system(identity: StudyIdentity, default: str = DEFAULT_PATIENT_SYSTEM) -> str:
    """The issuer when it is already a URI (or an OID), else the configured system."""
    issuer = identity.issuer_of_patient_id
    if issuer.startswith(("urn:", "http://", "https://")):
        return issuer
    if issuer and all(p.isdigit() for p in issuer.split(".")):
        return f"urn:oid:{issuer}"
    return default


def study_effective(identity: StudyIdentity | None, fallback: datetime) -> str:
    """The study's date and time as a FHIR dateTime. DICOM times carry no zone: the study's
    TimezoneOffsetFromUTC when known, else `fallback`'s (the gateway's receipt time, UTC);
    a StudyDate without a time is given as a date."""
    if identity is None or len(identity.study_date) < 8:
        return fallback.isoformat()
    d = identity.study_date
    try:
        day = datetime(int(d[:4]), int(d[4:6]), int(d[6:8]))
    except ValueError:
        return fallback.isoformat()
    t = identity.study_time.split(".")[0]
    if len(t) < 2 or not t.isdigit():
        return day.date().isoformat()
    hh, mm, ss = int(t[:2]), int(t[2:4] or 0), int(t[4:6] or 0)
    tz = UTC
    offset = identity.timezone_offset
    if len(offset) == 5 and offset[0] in "+-" and offset[1:].isdigit():
        sign = 1 if offset[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    try:
        return day.replace(hour=hh, minute=mm, second=ss, tzinfo=tz).isoformat()
    except ValueError:
        return day.date().isoformat()


def _subject(identity: StudyIdentity, patient_system: str) -> dict[str, Any] | None:
    if not (identity.patient_id or identity.patient_name):
        return None
    subject: dict[str, Any] = {"type": "Patient"}
    if identity.patient_id:
        subject["identifier"] = {"type": MRN_TYPE, "system": patient_identifier_system(identity, patient_system), "value": identity.patient_id}
        if identity.issuer_of_patient_id:
            subject["identifier"]["assigner"] = {"display": identity.issuer_of_patient_id}
    if identity.patient_name:
        subject["display"] = _person_display(identity.patient_name)
    return subject


def _assessed(report: ReportDrafted) -> list[ConceptScore]:
    skipped = set(report.not_assessed)
    return [c for c in report.concepts if c.observation not in skipped]


def finding_code(observation: Observation) -> dict[str, Any]:
    coding = [{"system": CHEXPERT_SYSTEM, "code": observation.value, "display": observation.value}]
    if observation in SNOMED_FINDINGS:
        code, display = SNOMED_FINDINGS[observation]
        coding.append({"system": SNOMED, "code": code, "display": display})
    return {"coding": coding, "text": observation.value}


def conclusion_codes(report: ReportDrafted) -> list[dict[str, Any]]:
    """The findings the model called present (No Finding when it called nothing else present)."""
    present = [c.observation for c in _assessed(report) if c.state == Certainty.PRESENT]
    findings: list[Observation] = [o for o in present if o != Observation.NO_FINDING] or [o for o in present if o == Observation.NO_FINDING]
    return [finding_code(o) for o in findings]


def _narrative(report: ReportDrafted, status: ReportStatus) -> dict[str, str]:
    def para(text: str) -> str:
        return html.escape(text).replace("\n", "<br/>")

    note = "" if status == "final" else f"<p><i>{html.escape(DRAFT_NOTE)}</i></p>"
    div = (
        '<div xmlns="http://www.w3.org/1999/xhtml">'
        f"<h3>Chest radiograph report ({status})</h3>"
        f"<p><b>FINDINGS:</b> {para(report.findings)}</p>"
        f"<p><b>IMPRESSION:</b> {para(report.impression)}</p>"
        f"<p>{para(assessment_line(report))}</p>{note}</div>"
    )
    return {"status": "generated", "div": div}


def _version_key(report: ReportDrafted) -> str:
    return f"{report.model_name}|{report.model_version}|{report.drafter}|{report.prompt_version}|{report.study.pipeline_version}"


def device_dict(report: ReportDrafted, *, version: FhirVersion = "R5") -> dict[str, Any]:
    """The AI that wrote the report: one Device per combination of model, drafter and prompt."""
    versions = [
        ("concept model", f"{report.model_name} {report.model_version}"),
        ("drafter", report.drafter),
        ("prompt", report.prompt_version),
        ("pipeline", report.study.pipeline_version),
    ]
    resource: dict[str, Any] = {
        "resourceType": "Device",
        "identifier": [{"system": URI_SYSTEM, "value": _urn("device", _version_key(report))}],
        "status": "active",
        "manufacturer": "RadAlign Stream",
        "version": [{"type": {"text": kind}, "value": value} for kind, value in versions],
    }
    if version == "R5":
        resource["name"] = [{"value": "RadAlign Stream report drafting AI", "type": "user-friendly-name"}]
        resource["type"] = [{"text": "AI software for drafting imaging reports"}]
    else:
        resource["deviceName"] = [{"name": "RadAlign Stream report drafting AI", "type": "user-friendly-name"}]
        resource["type"] = {"text": "AI software for drafting imaging reports"}
    return resource


def observation_dict(
    report: ReportDrafted, concept: ConceptScore, identity: StudyIdentity | None, *, status: ReportStatus = "preliminary",
    issued: datetime, patient_system: str = DEFAULT_PATIENT_SYSTEM, device_ref: str | None = None,
) -> dict[str, Any]:
    code, display = STATE_VALUES[concept.state]
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "meta": {"security": [AIAST]},
        "identifier": [{"system": URI_SYSTEM, "value": _urn("observation", report.report_id, concept.observation.value)}],
        "status": status,
        "category": [IMAGING_CATEGORY],
        "code": finding_code(concept.observation),
        "effectiveDateTime": study_effective(identity, report.study.received_at),
        "issued": issued.isoformat(),
        "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
        "component": [
            {
                "code": {"text": "AI model probability"},
                "valueQuantity": {"value": round(concept.probability, 4), "unit": "probability", "system": "http://unitsofmeasure.org", "code": "1"},
            }
        ],
    }
    if identity is not None and (subject := _subject(identity, patient_system)):
        resource["subject"] = subject
    if device_ref:
        resource["device"] = {"reference": device_ref}
    return resource


def diagnostic_report_dict(
    report: ReportDrafted, identity: StudyIdentity | None, *, issued: datetime | None = None, version: FhirVersion = "R5",
    status: ReportStatus = "preliminary", patient_system: str = DEFAULT_PATIENT_SYSTEM, results: list[str] | None = None,
) -> dict[str, Any]:
    """The DiagnosticReport as a JSON-ready dict (not yet validated; see `diagnostic_report`).
    `results`: references to the report's Observations (in a Bundle, their fullUrls)."""
    issued = issued or datetime.now(UTC)
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": report.report_id,
        "meta": {"security": [AIAST]},
        "text": _narrative(report, status),
        "identifier": [{"system": URI_SYSTEM, "value": f"urn:uuid:{report.report_id}"}],
        "status": status,
        "category": [{"coding": CATEGORY}],
        "code": {"coding": [REPORT_CODE], "text": "Chest radiograph report"},
        "effectiveDateTime": study_effective(identity, report.study.received_at),
        "issued": issued.isoformat(),
        "conclusion": report.impression,
        "presentedForm": [
            {
                "contentType": "text/plain; charset=utf-8",
                "language": "en",
                "data": base64.b64encode(report_text(report).encode("utf-8")).decode("ascii"),
                "title": f"{status.capitalize()} chest radiograph report",
            }
        ],
    }
    if codes := conclusion_codes(report):
        resource["conclusionCode"] = codes
    if results:
        resource["result"] = [{"reference": r} for r in results]
    if version == "R5" and status != "final":
        resource["note"] = [{"text": DRAFT_NOTE}]
    if identity is not None:
        based_on: dict[str, Any] = {"type": "ServiceRequest"}
        if identity.service_request_id:
            based_on["reference"] = f"ServiceRequest/{identity.service_request_id}"
        if identity.accession_number:
            based_on["identifier"] = {"type": ACCESSION_TYPE, "value": identity.accession_number}
        if len(based_on) > 1:
            resource["basedOn"] = [based_on]
        if subject := _subject(identity, patient_system):
            resource["subject"] = subject
        study = {"type": "ImagingStudy", "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{identity.study_instance_uid}"}}
        resource["study" if version == "R5" else "imagingStudy"] = [study]
    return resource


def provenance_dict(
    report: ReportDrafted, targets: list[str], device_ref: str, *, issued: datetime, status: ReportStatus,
    verifier: str = "", effective: str | None = None,
) -> dict[str, Any]:
    """The report's origin: produced by the AI Device (and, for a final version, verified by the
    named radiologist)."""
    agents: list[dict[str, Any]] = [
        {
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author", "display": "Author"}]},
            "who": {"reference": device_ref, "display": "RadAlign Stream report drafting AI"},
        }
    ]
    if status == "final" and verifier:
        agents.append(
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "verifier", "display": "Verifier"}]},
                "who": {"display": _person_display(verifier) or verifier},
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "Provenance",
        "meta": {"security": [AIAST]},
        "target": [{"reference": t} for t in targets],
        "recorded": issued.isoformat(),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE" if status != "final" else "UPDATE"}]},
        "agent": agents,
    }
    if effective:
        resource["occurredDateTime"] = effective
    return resource


def _models(version: FhirVersion) -> Any:
    if version == "R5":
        import fhir.resources as package
    elif version in ("R4", "R4B"):
        import fhir.resources.R4B as package  # type: ignore[no-redef]  # R4B and R5 modules are used through the same name
    else:
        raise ValueError(f"unsupported FHIR version {version!r} (R5 or R4)")
    return package


def validate(resource: dict[str, Any], version: FhirVersion = "R5") -> Any:
    """The `fhir.resources` model of any resource dict (raises pydantic.ValidationError)."""
    return _models(version).get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def diagnostic_report(
    report: ReportDrafted, identity: StudyIdentity | None, *, issued: datetime | None = None, version: FhirVersion = "R5",
    status: ReportStatus = "preliminary", patient_system: str = DEFAULT_PATIENT_SYSTEM,
) -> Any:
    """The validated `fhir.resources` DiagnosticReport model (raises pydantic.ValidationError)."""
    return validate(diagnostic_report_dict(report, identity, issued=issued, version=version, status=status, patient_system=patient_system), version)


def diagnostic_report_json(
    report: ReportDrafted, identity: StudyIdentity | None, *, issued: datetime | None = None, version: FhirVersion = "R5",
    status: ReportStatus = "preliminary",
) -> str:
    return diagnostic_report(report, identity, issued=issued, version=version, status=status).model_dump_json(exclude_none=True)


def conditional_url(resource_type: str, identifier: dict[str, str]) -> str:
    """`Type?identifier=system|value`: the conditional update that makes a PUT idempotent."""
    return f"{resource_type}?identifier={quote(identifier['system'], safe=':/')}|{quote(identifier['value'], safe=':/')}"


def transaction_bundle(
    report: ReportDrafted, identity: StudyIdentity | None, *, issued: datetime, version: FhirVersion = "R5",
    status: ReportStatus = "preliminary", patient_system: str = DEFAULT_PATIENT_SYSTEM, verifier: str = "",
    document_version: str = "",
) -> dict[str, Any]:
    """A transaction Bundle of conditional updates (PUT by identifier): Device, one Observation
    per assessed finding, the DiagnosticReport and its Provenance. References inside use the
    entries' urn:uuid fullUrls, which the server resolves to the resources it creates or updates.
    Each resource is validated with fhir.resources before the Bundle is returned."""
    device = device_dict(report, version=version)
    device_url = _urn("device-entry", _version_key(report))
    entries: list[tuple[str, dict[str, Any]]] = [(device_url, device)]
    obs_urls = []
    for concept in _assessed(report):
        obs = observation_dict(report, concept, identity, status=status, issued=issued, patient_system=patient_system, device_ref=device_url)
        url = _urn("observation-entry", report.report_id, concept.observation.value)
        entries.append((url, obs))
        obs_urls.append(url)
    dr = diagnostic_report_dict(report, identity, issued=issued, version=version, status=status, patient_system=patient_system, results=obs_urls)
    dr.pop("id")  # the server's id; the report is found by its identifier
    dr_url = f"urn:uuid:{report.report_id}"
    entries.append((dr_url, dr))
    prov = provenance_dict(
        report, [dr_url, *obs_urls], device_url, issued=issued, status=status, verifier=verifier,
        effective=dr["effectiveDateTime"],
    )
    # Provenance has no identifier element: it gets a client-assigned id, one per delivered
    # version of the report (a signed version adds its own), and is PUT by that id.
    prov_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"radalign:provenance:{report.report_id}:{status}:{document_version}"))
    prov["id"] = prov_id
    entries.append((f"urn:uuid:{prov_id}", prov))
    bundle_entries = []
    for full_url, resource in entries:
        validate(resource, version)
        if resource["resourceType"] == "Provenance":
            url = f"Provenance/{resource['id']}"
        else:
            url = conditional_url(resource["resourceType"], resource["identifier"][0])
        bundle_entries.append({"fullUrl": full_url, "resource": resource, "request": {"method": "PUT", "url": url}})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": bundle_entries}
    validate(bundle, version)
    return bundle
