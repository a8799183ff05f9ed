"""Signed versions delivered as legal records (issue 24), against a real C-STORE SCP and the
loopback FHIR server (validates with fhir.resources): status lifecycle, the signer re-identified
(never a pseudonym), the signed text's labels as the coded results, the predecessor links."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest
from delivery_helpers import KEY, make_identity, make_report, store_and_fhir

from radalign.config import Settings
from radalign.delivery.core import DeliveryCore
from radalign.delivery.destinations import DicomDestination, FhirDestination, RetryPolicy
from radalign.delivery.records import MemoryDeliveryRecords
from radalign.delivery.senders import DicomStoreSender, FhirSender
from radalign.delivery.version import ReportVersion, final_version
from radalign.reports.fhir import REPLACES_EXTENSION, REPORT_VERSION_SYSTEM, transaction_bundle
from radalign.reports.reidentification import StaticReidentifier
from radalign.reports.sr import signed_instance_uid
from radalign.review.signers import Signer
from radalign.review.signoff import build_final
from schemas.events import Certainty, Observation, ReportFinal, ReviewRole

FAST = RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.05, timeout_s=30)
IDP = "https://idp.example/realms/radiology"
RESIDENT = Signer("rd-aaaaaaaaaaaaaaaa", "Rex Resident", "res-7", IDP, "resident", family_name="Resident", given_name="Rex")
ATTENDING = Signer("rd-bbbbbbbbbbbbbbbb", "Ann Attending", "att-1", IDP, "radiologist", family_name="Attending", given_name="Ann")
SIGNED_AT = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)


def signed(version: int, status: str, signer: Signer, labels: dict, impression: str = "Cardiomegaly.", replaces: int | None = None) -> ReportFinal:
    return build_final(
        make_report(), findings="The heart is enlarged. No pleural effusion.", impression=impression, signer_key=signer.reviewer_key,
        signer_role=ReviewRole(signer.role), version=version, labels=labels, signed_at=SIGNED_AT.replace(hour=10 + version),
        status=status, replaces_version=replaces,
    )


@pytest.fixture
def peers():
    with store_and_fhir("R5") as both:
        yield both


def _core(scp, fhir, version="R5"):
    senders = [
        DicomStoreSender(DicomDestination(name="pacs", kind="dicom", ae_title="PACS", host="127.0.0.1", port=scp.port, retry=FAST)),
        FhirSender(FhirDestination(name="ehr", kind="fhir", base_url=fhir.base_url, version=version, retry=FAST)),
    ]
    return DeliveryCore({s.name: s for s in senders}, MemoryDeliveryRecords(), StaticReidentifier({KEY: make_identity()}), Settings())


def _who(refs):
    return [(r["identifier"]["value"], r["display"]) for r in refs]


async def test_resident_preliminary_then_cosigned_final_then_amended(peers):
    scp, fhir = peers
    core = _core(scp, fhir)
    await core.deliver(ReportVersion(make_report()))  # the AI's draft
    labels = {Observation.CARDIOMEGALY: Certainty.PRESENT, Observation.PLEURAL_EFFUSION: Certainty.ABSENT}

    # 1. the resident signs: preliminary, the resident interprets and performs, SR stays unverified
    v1 = final_version(make_report(), signed(1, "preliminary", RESIDENT, labels), RESIDENT)
    assert {r.outcome for r in await core.deliver(v1)} == {"delivered"}
    (dr,) = fhir.all("DiagnosticReport")
    assert dr["status"] == "preliminary" and _who(dr["performer"]) == [("res-7", "Rex Resident")]
    assert _who(dr["resultsInterpreter"]) == [("res-7", "Rex Resident")] and dr["performer"][0]["identifier"]["system"] == IDP
    sr1 = scp.text_srs[-1]
    assert (sr1.VerificationFlag, sr1.PreliminaryFlag, sr1.CompletionFlag) == ("UNVERIFIED", "PRELIMINARY", "COMPLETE")
    assert sr1.SOPInstanceUID == signed_instance_uid(make_report().report_id, 1)

    # 2. the attending co-signs: final; both interpret, the attending performs and verifies
    v2 = final_version(make_report(), signed(2, "final", ATTENDING, labels, replaces=1), ATTENDING, [RESIDENT])
    assert {r.outcome for r in await core.deliver(v2)} == {"delivered"}
    (dr,) = fhir.all("DiagnosticReport")
    assert dr["status"] == "final" and _who(dr["performer"]) == [("att-1", "Ann Attending")]
    assert _who(dr["resultsInterpreter"]) == [("att-1", "Ann Attending"), ("res-7", "Rex Resident")]
    replaces = {e["url"]: e["valueIdentifier"]["value"] for e in dr["extension"]}
    assert replaces[REPLACES_EXTENSION] == f"{make_report().report_id}-v1"
    sr2 = scp.text_srs[-1]
    assert (sr2.VerificationFlag, sr2.PreliminaryFlag) == ("VERIFIED", "FINAL")
    verifier = sr2.VerifyingObserverSequence[0]
    assert str(verifier.VerifyingObserverName) == "Attending^Ann"
    assert verifier.VerifyingObserverIdentificationCodeSequence[0].CodeValue == "att-1"
    predecessor = sr2.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == sr1.SOPInstanceUID
    people = [str(i.PersonName) for i in sr2.ContentSequence if i.ValueType == "PNAME"]
    assert people == ["Attending^Ann", "Resident^Rex"]

    # 3. a change after final: amended, linked to version 2 (FHIR extension + Provenance revision; SR predecessor)
    v3 = final_version(make_report(), signed(3, "amended", ATTENDING, labels, impression="Cardiomegaly. Amended.", replaces=2), ATTENDING)
    assert {r.outcome for r in await core.deliver(v3)} == {"delivered"}
    (dr,) = fhir.all("DiagnosticReport")
    assert dr["status"] == "amended"
    provenances = {p["id"]: p for p in fhir.all("Provenance")}
    revisions = [p["entity"][0]["what"]["identifier"] for p in provenances.values() if p.get("entity")]
    assert {"system": REPORT_VERSION_SYSTEM, "value": f"{make_report().report_id}-v2"} in revisions
    sr3 = scp.text_srs[-1]
    assert sr3.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sr2.SOPInstanceUID
    assert len({sr1.SOPInstanceUID, sr2.SOPInstanceUID, sr3.SOPInstanceUID}) == 3  # every version kept

    # a late redelivery of an older version, or of the AI's draft, never replaces it
    assert {r.outcome for r in await core.deliver(v2)} == {"skipped"}
    assert {r.outcome for r in await core.deliver(ReportVersion(make_report()))} == {"skipped"}
    assert fhir.all("DiagnosticReport")[0]["status"] == "amended"
    # the server keeps every version it stored, each once: the draft, then P, F, C (the skipped redeliveries added none)
    async with httpx.AsyncClient(timeout=10) as http:
        history = (await http.get(f"{fhir.base_url}/DiagnosticReport/{dr['id']}/_history")).json()
        second = (await http.get(f"{fhir.base_url}/DiagnosticReport/{dr['id']}/_history/2")).json()
    assert history["type"] == "history" and [e["resource"]["status"] for e in history["entry"]] == ["amended", "final", "preliminary", "preliminary"]
    assert second["meta"]["versionId"] == "2" and _who(second["performer"]) == [("res-7", "Rex Resident")]

    # no pseudonym ever appears in a delivered record
    everything = json.dumps(fhir.resources) + "".join(str(ds) for ds in scp.received)  # both SRs
    assert "rd-aaaa" not in everything and "rd-bbbb" not in everything


async def test_the_signed_text_decides_the_coded_results(peers):
    scp, fhir = peers
    core = _core(scp, fhir)
    # the model called cardiomegaly present; the attending's signed text says the heart is normal
    labels = {Observation.CARDIOMEGALY: Certainty.ABSENT, Observation.PLEURAL_EFFUSION: Certainty.ABSENT, Observation.EDEMA: Certainty.PRESENT}
    final = final_version(make_report(), signed(1, "final", ATTENDING, labels, impression="Pulmonary edema."), ATTENDING)
    await core.deliver(final)
    (dr,) = fhir.all("DiagnosticReport")
    observations = {o["id"]: o for o in fhir.all("Observation")}
    results = [observations[r["reference"].split("/")[1]] for r in dr["result"]]
    # DiagnosticReport.result: the signed labels, the signer's (no AI label, no device)
    assert {(o["code"]["text"], o["valueCodeableConcept"]["text"]) for o in results} == {
        ("Cardiomegaly", "Absent"), ("Pleural Effusion", "Absent"), ("Edema", "Present")}
    assert all(o["status"] == "final" and "security" not in o.get("meta", {}) and "device" not in o for o in results)
    assert all(_who(o["performer"]) == [("att-1", "Ann Attending")] for o in results)
    assert [c["text"] for c in dr["conclusionCode"]] == ["Edema"]
    # the model's own results: the device's, outside result, never silently contradicting
    ai = [o for o in observations.values() if o.get("device")]
    assert {o["code"]["text"] for o in ai} == {"Cardiomegaly", "Pleural Effusion"}
    assert all(o["meta"]["security"][0]["code"] == "AIAST" and o["status"] == "preliminary" for o in ai)
    cardio_ai = next(o for o in ai if o["code"]["text"] == "Cardiomegaly")
    assert "not confirmed" in cardio_ai["note"][0]["text"] and "absent" in cardio_ai["note"][0]["text"]
    cardio_signed = next(o for o in results if o["code"]["text"] == "Cardiomegaly")
    assert cardio_signed["derivedFrom"][0]["reference"] == f"Observation/{cardio_ai['id']}"
    assert "AI model's result was present" in cardio_signed["note"][0]["text"]


def test_r4_bundle_with_attribution_validates_and_ai_results_can_be_left_out():
    labels = {Observation.CARDIOMEGALY: Certainty.PRESENT}
    item = final_version(make_report(), signed(2, "corrected", ATTENDING, labels, replaces=1), ATTENDING)
    bundle = transaction_bundle(item.report, make_identity(), issued=item.issued, version="R4", status=item.status,
                                signature=item.signature, ai_results=False)
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds.count("Observation") == 1  # only the signed label
    dr = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    assert dr["status"] == "corrected" and dr["resultsInterpreter"][0]["display"] == "Ann Attending"


async def test_no_pseudonym_is_delivered_when_the_signer_mapping_is_missing():
    from radalign.delivery.version import signed_number

    assert signed_number("v3-final-abc", "final") == 3 and signed_number("final-abc", "final") == 1
    assert signed_number("preliminary-abc", "preliminary") is None
    with pytest.raises(ValueError):
        ReportVersion(make_report(), status="amended")
