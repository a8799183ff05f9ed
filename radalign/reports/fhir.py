"""The report as FHIR resources (R4 by default, R5 on request per destination), built and
validated by `fhir.resources` (pydantic models of the official FHIR definitions).

Coding: LOINC 18748-4 "Diagnostic imaging study" is the report-document code that US Core and
IHE use for imaging reports of any modality; the chest-specific LOINC codes (36643-5 "XR Chest
2 Views", 36554-4 "XR Chest Single view", ...) name the *procedure* and depend on the number of
views, which the draft does not know, so they are left to the order (ServiceRequest). The
category carries LOINC LP29684-5 and HL7 v2-0074 RAD ("Radiology").

What a consumer gets (`transaction_bundle`, what the delivery stage sends):
- DiagnosticReport: subject = the Patient, as a conditional reference
  (`Patient?identifier=system|value`, which the server resolves to the one Patient it holds with
  that identifier) or, where the destination allows creating patients, the urn:uuid of a Patient
  entry written with a conditional create (`ifNoneExist`); the identifier and the name stay on the
  reference too. `basedOn` = the order as a conditional reference
  (`ServiceRequest?identifier=...` from the placer, else the filler order number), or a literal
  `ServiceRequest/<id>` only where the routing facts name a FHIR id; the accession number as the
  reference's identifier. On R4, `meta.profile` = US Core DiagnosticReport Profile for Report and
  Note exchange (`US_CORE_DR_NOTE`) when there is a subject; narrative `text` and `presentedForm`
  (findings, impression, then the AI assessment line: what the model assessed and what it did
  not, `radalign.reports.assessment`), `conclusion` and
  `conclusionCode` (the findings the model called present), `effectiveDateTime` = the study's
  date and time, `result` = one coded Observation per assessed finding, the AIAST security label;
- Observation per assessed finding: the CheXpert observation (and SNOMED CT where the mapping is
  unambiguous), value present / absent / equivocal, the model's probability as a component;
- Device: the AI (concept model, drafter, prompt and pipeline versions);
- Provenance: the report and its observations, produced by that Device.
Every resource but the Patient is written with a conditional update (PUT by identifier; the Provenance, which has
no identifier element, by a client-assigned id), so a redelivery updates
the same resources instead of duplicating them; a final (signed) version updates them in place.

A literal reference that does not resolve makes a FHIR server (HAPI) refuse the whole transaction,
and so does a conditional reference that matches no resource or several: the loopback server of
the tests (`radalign.loopback.fhir_server`) enforces the same.

R4: fhir.resources ships R4B models, which are wire-compatible with R4 for these five resources;
`version="R4"` validates with them (R4B is accepted as an alias).

Identifiers enter only here, from the re-identification mapping: the subject, the order (basedOn:
ServiceRequest with the accession number) and the imaging study.
"""

from __future__ import annotations

import base64
import html
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from radalign.drafting.concepts import SNOMED_FINDINGS
from radalign.reports.assessment import assessment_line
from radalign.reports.reidentification import StudyIdentity
from schemas.events import Certainty, ConceptScore, Observation, ReportDrafted

if TYPE_CHECKING:
    from radalign.review.signers import Signature, Signer

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
STATE_VALUES: dict[Certainty, tuple[str, str]] = {
    Certainty.PRESENT: ("52101004", "Present"),
    Certainty.ABSENT: ("2667000", "Absent"),
    Certainty.UNCERTAIN: ("42425007", "Equivocal"),
}
FhirVersion = Literal["R5", "R4", "R4B"]
ReportStatus = Literal["preliminary", "final", "amended", "corrected"]
#: Statuses of a version an attending signed (released).
RELEASED_STATUSES = ("final", "amended", "corrected")
RESIDENT_NOTE = "Preliminary report signed by a resident; an attending radiologist's co-signature is pending."
#: Signed versions of a report: `{report_id}-v{n}` (ReportFinal.final_id).
REPORT_VERSION_SYSTEM = "urn:radalign:fhir:NamingSystem:report-version"
#: DiagnosticReport extensions: which signed version this is, and the version it replaces (R4
#: and R5 DiagnosticReport have no element for a replaced report; the Provenance of each signed
#: version also names the one it revises, as an entity with role "revision").
VERSION_EXTENSION = "urn:radalign:fhir:StructureDefinition:report-version"
REPLACES_EXTENSION = "urn:radalign:fhir:StructureDefinition:replaces-report-version"
#: US Core DiagnosticReport Profile for Report and Note exchange (R4 only: US Core is an R4 IG).
US_CORE_DR_NOTE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-diagnosticreport-note"
PLACER_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC", "display": "Placer Identifier"}]}
FILLER_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "FILL", "display": "Filler Identifier"}]}
#: How the bundle names the patient: "conditional" (`Patient?identifier=...`: the patient must
#: exist on the server, the usual EHR) or "create" (a Patient entry, conditional create).
PatientMode = Literal["conditional", "create"]
#: How the bundle names the order: "conditional" (`ServiceRequest?identifier=...`: the order must
#: exist on the server) or "identifier" (a logical reference by identifier only, never resolved).
OrderMode = Literal["conditional", "identifier"]


def report_text(report: ReportDrafted) -> str:
    """The human-readable report (presentedForm), ending with the AI assessment line: what the
    model assessed and what it did not (`radalign.reports.assessment`)."""
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


def signed_conclusion_codes(labels: Mapping[Observation, Certainty]) -> list[dict[str, Any]]:
    """The findings the signed text states as present (No Finding when it states nothing else)."""
    present = [o for o in Observation if labels.get(o) == Certainty.PRESENT]
    findings: list[Observation] = [o for o in present if o != Observation.NO_FINDING] or [o for o in present if o == Observation.NO_FINDING]
    return [finding_code(o) for o in findings]


def conclusion_codes(report: ReportDrafted) -> list[dict[str, Any]]:
    """The findings the model called present (No Finding when it called nothing else present)."""
    present = [c.observation for c in _assessed(report) if c.state == Certainty.PRESENT]
    findings: list[Observation] = [o for o in present if o != Observation.NO_FINDING] or [o for o in present if o == Observation.NO_FINDING]
    return [finding_code(o) for o in findings]


def _status_note(status: ReportStatus, signed: bool) -> str:
    if status in RELEASED_STATUSES:
        return ""
    return RESIDENT_NOTE if signed else DRAFT_NOTE


def practitioner_ref(signer: Signer) -> dict[str, Any]:
    """A logical reference to the signer as the identity provider names them (never a pseudonym)."""
    return {"type": "Practitioner", "identifier": {"system": signer.identifier_system, "value": signer.identifier}, "display": signer.display_name}


def _narrative(report: ReportDrafted, status: ReportStatus, signature: Signature | None = None) -> dict[str, str]:
    def para(text: str) -> str:
        return html.escape(text).replace("\n", "<br/>")

    note_text = _status_note(status, signature is not None)
    note = f"<p><i>{html.escape(note_text)}</i></p>" if note_text else ""
    if signature is not None:
        names = ", ".join(html.escape(p.display_name) for p in (signature.signer, *signature.co_signers))
        note += f"<p>Signed ({html.escape(status)}, version {signature.version}) by {names}.</p>"
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


def device_dict(report: ReportDrafted, *, version: FhirVersion = "R4") -> dict[str, Any]:
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
    issued: datetime, patient_system: str = DEFAULT_PATIENT_SYSTEM, device_ref: str | None = None, note: str = "",
) -> dict[str, Any]:
    """The model's own result for one finding: marked as the AI's (AIAST security label, the
    Device as `device`, the model's probability)."""
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
    if note:
        resource["note"] = [{"text": note}]
    return resource


def signed_observation_dict(
    report: ReportDrafted, observation: Observation, state: Certainty, identity: StudyIdentity | None, signature: Signature, *,
    status: ReportStatus, issued: datetime, patient_system: str = DEFAULT_PATIENT_SYSTEM, derived_from: str | None = None,
    ai_state: Certainty | None = None,
) -> dict[str, Any]:
    """One coded result of the signed report (its labels, ReportFinal.labels): the signer's,
    not the AI's (no AIAST label, no device; performer = the signer). `derived_from`: the AI's
    Observation of the same finding, which the signer saw; a disagreement is stated in a note."""
    code, display = STATE_VALUES[state]
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": URI_SYSTEM, "value": _urn("signed-observation", report.report_id, observation.value)}],
        "status": status,
        "category": [IMAGING_CATEGORY],
        "code": finding_code(observation),
        "effectiveDateTime": study_effective(identity, report.study.received_at),
        "issued": issued.isoformat(),
        "performer": [practitioner_ref(signature.signer)],
        "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
    }
    if identity is not None and (subject := _subject(identity, patient_system)):
        resource["subject"] = subject
    if derived_from:
        resource["derivedFrom"] = [{"reference": derived_from}]
    if ai_state is not None and ai_state != state:
        resource["note"] = [{"text": f"The AI model's result was {STATE_VALUES[ai_state][1].lower()}; the signed report's result stands."}]
    return resource


def _version_extension(url: str, version_id: str) -> dict[str, Any]:
    return {"url": url, "valueIdentifier": {"system": REPORT_VERSION_SYSTEM, "value": version_id}}


def version_extensions(report: ReportDrafted, signature: Signature | None) -> list[dict[str, Any]]:
    """This version's own id and the id of the version it replaces: a signed version's
    (`{report_id}-v{n}`, replacing the previous signed version, or for the first sign-off the draft
    it was signed from), or a draft's (`draft_id`, replacing a re-opened study's earlier draft)."""
    if signature is not None:
        own = signature.version_id(report.report_id)
        replaced = signature.version_id(report.report_id, signature.replaces_version) if signature.replaces_version else report.draft_id
    elif report.draft_id:
        own, replaced = report.draft_id, report.replaces_draft_id
    else:
        return []  # a draft from a producer before draft ids: the resource id is its identity
    return [_version_extension(VERSION_EXTENSION, own)] + ([_version_extension(REPLACES_EXTENSION, replaced)] if replaced else [])


def diagnostic_report_dict(
    report: ReportDrafted, identity: StudyIdentity | None, *, issued: datetime | None = None, version: FhirVersion = "R4",
    status: ReportStatus = "preliminary", patient_system: str = DEFAULT_PATIENT_SYSTEM, results: list[str] | None = None,
    signature: Signature | None = None,
) -> dict[str, Any]:
    """The DiagnosticReport as a JSON-ready dict (not yet validated; see `diagnostic_report`).
    `results`: references to the report's Observations (in a Bundle, their fullUrls).
    `signature`: a signed version, re-identified: its signer is the `performer` and (with the
    residents whose work it co-signs) the `resultsInterpreter`; the conclusion codes are the
    signed labels'; extensions name the signed version and the version it replaces."""
    issued = issued or datetime.now(UTC)
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": report.report_id,
        "meta": {"security": [AIAST]},
        "text": _narrative(report, status, signature),
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
    codes = conclusion_codes(report) if signature is None else signed_conclusion_codes(signature.labels)
    if codes:
        resource["conclusionCode"] = codes
    if results:
        resource["result"] = [{"reference": r} for r in results]
    if version == "R5" and (note := _status_note(status, signature is not None)):
        resource["note"] = [{"text": note}]
    if signature is not None:
        _add_signer(resource, signature)
    if extensions := version_extensions(report, signature):
        resource["extension"] = extensions
    if identity is not None:
        _add_order_subject_and_study(resource, identity, version, patient_system)
    if version != "R5" and "subject" in resource:
        resource["meta"]["profile"] = [US_CORE_DR_NOTE]
    return resource


def _add_signer(resource: dict[str, Any], signature: Signature) -> None:
    """A signed version's performer and interpreters (the signer, then the co-signed residents)."""
    resource["performer"] = [practitioner_ref(signature.signer)]
    resource["resultsInterpreter"] = [practitioner_ref(p) for p in (signature.signer, *signature.co_signers)]


def _add_order_subject_and_study(resource: dict[str, Any], identity: StudyIdentity, version: FhirVersion, patient_system: str) -> None:
    based_on: dict[str, Any] = {"type": "ServiceRequest"}
    if identity.service_request_id:
        based_on["reference"] = f"ServiceRequest/{identity.service_request_id}"
    if identity.accession_number:
        based_on["identifier"] = {"type": ACCESSION_TYPE, "value": identity.accession_number}
    elif order := order_identifier(identity):
        based_on["identifier"] = order
    if len(based_on) > 1:
        resource["basedOn"] = [based_on]
    if subject := _subject(identity, patient_system):
        resource["subject"] = subject
    study = {"type": "ImagingStudy", "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{identity.study_instance_uid}"}}
    resource["study" if version == "R5" else "imagingStudy"] = [study]


def order_identifier(identity: StudyIdentity, system: str = "") -> dict[str, Any] | None:
    """The order's identifier: the placer order number, else the filler's (None: neither known)."""
    for value, kind in ((identity.placer_order_number, PLACER_TYPE), (identity.filler_order_number, FILLER_TYPE)):
        if value:
            identifier: dict[str, Any] = {"type": kind, "value": value}
            if system:
                identifier["system"] = system
            return identifier
    return None


def patient_dict(identity: StudyIdentity, patient_system: str = DEFAULT_PATIENT_SYSTEM) -> dict[str, Any]:
    """The Patient a destination that allows it gets created (conditional create by identifier)."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"type": MRN_TYPE, "system": patient_identifier_system(identity, patient_system), "value": identity.patient_id}],
    }
    if identity.patient_name:
        family, _, rest = identity.patient_name.partition("^")
        name: dict[str, Any] = {"text": _person_display(identity.patient_name)}
        if family:
            name["family"] = family
        if given := [g for g in rest.split("^")[:2] if g]:
            name["given"] = given
        resource["name"] = [name]
    if identity.birth_date is not None:
        resource["birthDate"] = identity.birth_date.isoformat()
    if identity.sex:
        resource["gender"] = {"M": "male", "F": "female", "O": "other"}[identity.sex]
    return resource


def provenance_dict(
    report: ReportDrafted, targets: list[str], device_ref: str, *, issued: datetime, status: ReportStatus,
    verifier: str = "", effective: str | None = None, signature: Signature | None = None,
) -> dict[str, Any]:
    """The report's origin: drafted by the AI Device; for a signed version, authored by the
    residents it co-signs and the signer (verifier once an attending signed), each as the
    identity provider names them, and a revision of the version it replaces."""
    agents: list[dict[str, Any]] = [
        {
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author", "display": "Author"}]},
            "who": {"reference": device_ref, "display": "RadAlign Stream report drafting AI"},
        }
    ]
    participant = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
    if signature is not None:
        for person in signature.co_signers:
            agents.append({"type": {"coding": [{"system": participant, "code": "author", "display": "Author"}]}, "who": practitioner_ref(person)})
        code, display = ("verifier", "Verifier") if status in RELEASED_STATUSES else ("author", "Author")
        agents.append({"type": {"coding": [{"system": participant, "code": code, "display": display}]}, "who": practitioner_ref(signature.signer)})
    elif status in RELEASED_STATUSES and verifier:
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
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                 "code": "CREATE" if status == "preliminary" and signature is None else "UPDATE"}]},
        "agent": agents,
    }
    if signature is not None and signature.replaces_version is not None:
        replaced = signature.version_id(report.report_id, signature.replaces_version)
        what = {"identifier": {"system": REPORT_VERSION_SYSTEM, "value": replaced}, "display": f"signed version {signature.replaces_version}"}
        resource["entity"] = [{"role": "revision", "what": what}]
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


def validate(resource: dict[str, Any], version: FhirVersion = "R4") -> Any:
    """The `fhir.resources` model of any resource dict (raises pydantic.ValidationError)."""
    return _models(version).get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def diagnostic_report(
    report: ReportDrafted, identity: StudyIdentity | None, *, issued: datetime | None = None, version: FhirVersion = "R4",
    status: ReportStatus = "preliminary", patient_system: str = DEFAULT_PATIENT_SYSTEM, signature: Signature | None = None,
) -> Any:
    """The validated `fhir.resources` DiagnosticReport model (raises pydantic.ValidationError)."""
    resource = diagnostic_report_dict(report, identity, issued=issued, version=version, status=status, patient_system=patient_system, signature=signature)
    return validate(resource, version)


def diagnostic_report_json(
    report: ReportDrafted, identity: StudyIdentity | None, *, issued: datetime | None = None, version: FhirVersion = "R4",
    status: ReportStatus = "preliminary",
) -> str:
    return diagnostic_report(report, identity, issued=issued, version=version, status=status).model_dump_json(exclude_none=True)


def conditional_url(resource_type: str, identifier: dict[str, str]) -> str:
    """`Type?identifier=system|value`: the conditional update that makes a PUT idempotent."""
    value = quote(identifier["value"], safe=":/")
    if not identifier.get("system"):
        return f"{resource_type}?identifier={value}"
    return f"{resource_type}?identifier={quote(identifier['system'], safe=':/')}|{value}"


def transaction_bundle(
    report: ReportDrafted, identity: StudyIdentity | None, *, issued: datetime, version: FhirVersion = "R4",
    status: ReportStatus = "preliminary", patient_system: str = DEFAULT_PATIENT_SYSTEM, verifier: str = "",
    document_version: str = "", signature: Signature | None = None, ai_results: bool = True,
    patient: PatientMode = "conditional", order: OrderMode = "conditional", order_identifier_system: str = "",
) -> dict[str, Any]:
    """A transaction Bundle of conditional updates (PUT by identifier): Device, the coded
    results, the DiagnosticReport and its Provenance. References inside use the entries'
    urn:uuid fullUrls, which the server resolves to the resources it creates or updates. Each
    resource is validated with fhir.resources before the Bundle is returned.

    A draft's results are the model's own Observations. On a signed version (`signature`) the
    signed text decides the coded results: `DiagnosticReport.result` holds one Observation per
    label of the signed report (ReportFinal.labels), the signer's; the model's Observations,
    when sent (`ai_results`), stay the device's and stay out of `result`. This follows the HL7
    FHIR AI Transparency IG (http://hl7.org/fhir/uv/aitransparency/: AI-asserted data carry the
    AIAST security label and name the Device, and Provenance tells the AI's authorship from the
    human's verification) and IHE Radiology AI Results (AIR: the AI's results remain attributed
    to the algorithm, distinct from the radiologist's report). The model's results are never
    silently contradicted: the signed Observation of a finding is `derivedFrom` the model's, and
    a note on each side states the disagreement.

    The subject: `patient="conditional"` references `Patient?identifier=system|value` (the server
    must hold exactly one such Patient, else it refuses the transaction); `patient="create"` adds a
    Patient entry (POST with `ifNoneExist`, so an existing one is reused) and references it. The
    order: `order="conditional"` references `ServiceRequest?identifier=[system|]number` (placer
    order number, else filler; `order_identifier_system` = the placer's system where known);
    `order="identifier"` names it by identifier only. A `ServiceRequest/<id>` literal is written
    only when the routing facts carry a FHIR id (`StudyIdentity.service_request_id`)."""
    device_url = _urn("device-entry", _version_key(report))
    entries: list[tuple[str, dict[str, Any]]] = [(device_url, device_dict(report, version=version))]
    subject_ref, patient_entry = _transaction_subject(identity, patient, patient_system)
    results, obs_urls = _result_entries(
        report, identity, signature, ai_results=ai_results, status=status, issued=issued, patient_system=patient_system, device_url=device_url,
    )
    entries += results
    dr = diagnostic_report_dict(
        report, identity, issued=issued, version=version, status=status, patient_system=patient_system, results=obs_urls,
        signature=signature,
    )
    dr.pop("id")  # the server's id; the report is found by its identifier
    if identity is not None:
        _set_order_reference(dr, identity, order, order_identifier_system)
    dr_url = f"urn:uuid:{report.report_id}"
    entries.append((dr_url, dr))
    prov = provenance_dict(
        report, [dr_url, *obs_urls], device_url, issued=issued, status=status, verifier=verifier,
        effective=dr["effectiveDateTime"], signature=signature,
    )
    entries.append(_with_provenance_id(prov, report, status, document_version, signature))
    if subject_ref is not None:
        for _, resource in entries:
            if "subject" in resource:
                resource["subject"]["reference"] = subject_ref
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": _bundle_entries(entries, patient_entry, version)}
    validate(bundle, version)
    return bundle


def _with_provenance_id(
    prov: dict[str, Any], report: ReportDrafted, status: ReportStatus, document_version: str, signature: Signature | None,
) -> tuple[str, dict[str, Any]]:
    """Provenance has no identifier element: it gets a client-assigned id, one per delivered
    version of the report (each signed version adds its own), and is PUT by that id."""
    which = f"signed-v{signature.version}" if signature is not None else f"{status}:{document_version}"
    prov_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"radalign:provenance:{report.report_id}:{which}"))
    prov["id"] = prov_id
    return f"urn:uuid:{prov_id}", prov


def _transaction_subject(
    identity: StudyIdentity | None, patient: PatientMode, patient_system: str,
) -> tuple[str | None, tuple[str, dict[str, Any], str] | None]:
    """The subject reference, and (fullUrl, Patient, ifNoneExist) when the transaction creates the Patient."""
    if identity is None or not identity.patient_id:
        return None, None
    patient_resource = patient_dict(identity, patient_system)
    identifier = patient_resource["identifier"][0]
    if patient != "create":
        return conditional_url("Patient", identifier), None
    subject_ref = _urn("patient-entry", identifier["system"], identifier["value"])
    if_none_exist = conditional_url("Patient", identifier).split("?", 1)[1]
    return subject_ref, (subject_ref, patient_resource, if_none_exist)


def _ai_result_note(concept: ConceptScore, labels: Mapping[Observation, Certainty]) -> str:
    """On a signed version, how the signed report stands to the model's result."""
    signed_state = labels.get(concept.observation)
    if signed_state is None:
        return "AI result; the signed report does not mention this finding."
    if signed_state != concept.state:
        return f"AI result not confirmed: the signed report states {STATE_VALUES[signed_state][1].lower()}."
    return "AI result; the signed report agrees."


def _result_entries(
    report: ReportDrafted, identity: StudyIdentity | None, signature: Signature | None, *, ai_results: bool, status: ReportStatus,
    issued: datetime, patient_system: str, device_url: str,
) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """The model's Observations (when sent) and the signer's, and the fullUrls of `DiagnosticReport.result`."""
    entries: list[tuple[str, dict[str, Any]]] = []
    obs_urls: list[str] = []
    ai_urls: dict[Observation, str] = {}
    ai_states: dict[Observation, Certainty] = {}
    labels: Mapping[Observation, Certainty] = signature.labels if signature is not None else {}
    for concept in _assessed(report):
        note = ""
        if signature is not None:
            note = _ai_result_note(concept, labels)
            if not ai_results:
                continue
        # The model's result is the model's: never updated to the signed status.
        obs = observation_dict(
            report, concept, identity, status="preliminary" if signature is not None else status, issued=issued,
            patient_system=patient_system, device_ref=device_url, note=note,
        )
        url = _urn("observation-entry", report.report_id, concept.observation.value)
        entries.append((url, obs))
        ai_urls[concept.observation] = url
        ai_states[concept.observation] = concept.state
        if signature is None:
            obs_urls.append(url)
    if signature is None:
        return entries, obs_urls
    for observation in Observation:
        if (state := labels.get(observation)) is None:
            continue
        signed = signed_observation_dict(
            report, observation, state, identity, signature, status=status, issued=issued, patient_system=patient_system,
            derived_from=ai_urls.get(observation), ai_state=ai_states.get(observation),
        )
        url = _urn("signed-observation-entry", report.report_id, observation.value)
        entries.append((url, signed))
        obs_urls.append(url)
    return entries, obs_urls


def _bundle_entries(
    entries: list[tuple[str, dict[str, Any]]], patient_entry: tuple[str, dict[str, Any], str] | None, version: FhirVersion,
) -> list[dict[str, Any]]:
    """Each resource validated, with its request: POST-if-none-exist for a new Patient, PUT for the rest."""
    bundle_entries = []
    if patient_entry is not None:
        full_url, resource, if_none_exist = patient_entry
        validate(resource, version)
        bundle_entries.append({"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": "Patient", "ifNoneExist": if_none_exist}})
    for full_url, resource in entries:
        validate(resource, version)
        if resource["resourceType"] == "Provenance":
            url = f"Provenance/{resource['id']}"
        else:
            url = conditional_url(resource["resourceType"], resource["identifier"][0])
        bundle_entries.append({"fullUrl": full_url, "resource": resource, "request": {"method": "PUT", "url": url}})
    return bundle_entries


def _set_order_reference(dr: dict[str, Any], identity: StudyIdentity, mode: OrderMode, system: str) -> None:
    order_ref = _order_reference(identity, mode, system)
    if order_ref is not None:
        dr["basedOn"] = [order_ref]
    elif "basedOn" in dr and "identifier" not in dr["basedOn"][0]:
        dr.pop("basedOn")


def _order_reference(identity: StudyIdentity, mode: OrderMode, system: str) -> dict[str, Any] | None:
    """basedOn in a transaction: never a literal reference the server may not hold."""
    ref: dict[str, Any] = {"type": "ServiceRequest"}
    order = order_identifier(identity, system)
    if identity.service_request_id:
        ref["reference"] = f"ServiceRequest/{identity.service_request_id}"
    elif order is not None and mode == "conditional":
        ref["reference"] = conditional_url("ServiceRequest", order)
    if identity.accession_number:
        ref["identifier"] = {"type": ACCESSION_TYPE, "value": identity.accession_number}
    elif order is not None:
        ref["identifier"] = order
    return ref if len(ref) > 1 else None
