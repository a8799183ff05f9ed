"""The delivery core against real protocol peers: a pynetdicom C-STORE SCP and the loopback FHIR
server (which validates everything with fhir.resources); no Kafka, no database."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from delivery_helpers import KEY, StoreSCP, make_identity, make_report, seed_patient

from radalign.config import Settings
from radalign.delivery.core import DeliveryCore, DeliveryFailed
from radalign.delivery.destinations import ClientCredentialsAuth, DicomDestination, FhirDestination, RetryPolicy
from radalign.delivery.records import MemoryDeliveryRecords
from radalign.delivery.senders import DicomStoreSender, FhirSender
from radalign.delivery.version import ReportVersion
from radalign.framework import metrics
from radalign.framework.retry import PermanentError
from radalign.loopback.fhir_server import LoopbackFhirServer
from radalign.reports.reidentification import StaticReidentifier
from radalign.reports.sr import read_sr_text
from radalign.testing.stack import free_port

FAST = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.05, timeout_s=30)  # generous: a loaded CI machine


@pytest.fixture
def scp():
    server = StoreSCP()
    port = server.start()
    server.port = port
    yield server
    server.stop()


@pytest.fixture
def fhir():
    server = LoopbackFhirServer("R5")
    server.start()
    seed_patient(server)
    yield server
    server.stop()


def _core(senders, records=None, identity=None):
    identity = identity or make_identity()
    return DeliveryCore({s.name: s for s in senders}, records or MemoryDeliveryRecords(), StaticReidentifier({KEY: identity}), Settings())


def _pacs(port: int, **kw) -> DicomStoreSender:
    return DicomStoreSender(DicomDestination(name="pacs", kind="dicom", ae_title="PACS", host="127.0.0.1", port=port, retry=FAST, **kw))


def _ehr(fhir: LoopbackFhirServer, version="R5", **kw) -> FhirSender:
    return FhirSender(FhirDestination(name="ehr", kind="fhir", base_url=fhir.base_url, version=version, retry=FAST, **kw))


def _duplicates() -> float:
    return metrics.DUPLICATES.labels(stage="delivery")._value.get()


async def test_delivers_the_sr_and_the_fhir_resources_once_per_version(scp, fhir):
    records = MemoryDeliveryRecords()
    core = _core([_pacs(scp.port), _ehr(fhir)], records)
    item = ReportVersion(make_report())
    results = await core.deliver(item)
    assert {r.destination: r.outcome for r in results} == {"pacs": "delivered", "ehr": "delivered"}
    # the PACS got the SR of this study, with the draft's text
    (sr,) = scp.text_srs
    assert sr.StudyInstanceUID == make_identity().study_instance_uid and sr.VerificationFlag == "UNVERIFIED"
    assert sr.AccessionNumber == "ACC-77" and sr.StudyDate == "20261127"
    # beside it, the model's results as a TID 1500 SR in the same study
    (ai,) = scp.ai_srs
    assert ai.StudyInstanceUID == sr.StudyInstanceUID and ai.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert ai.SeriesInstanceUID != sr.SeriesInstanceUID
    # the FHIR server validated and stored the report, its observations, device and provenance
    (dr,) = fhir.all("DiagnosticReport")
    assert dr["status"] == "preliminary" and dr["subject"]["identifier"]["system"] == "urn:oid:1.2.3.4.5"
    assert len(fhir.all("Observation")) == 2  # Pneumothorax was not assessed: no observation
    assert all(ref["reference"].startswith("Observation/") for ref in dr["result"])
    (prov,) = fhir.all("Provenance")
    assert prov["agent"][0]["who"]["reference"].startswith("Device/")
    row = records.rows[(item.report.report_id, "ehr")]
    assert row.status == "delivered" and row.remote_ref.startswith(f"DiagnosticReport/{dr['id']}/") and row.attempts == 1

    # redelivery of the same version (Kafka at-least-once): skipped, counted, nothing re-sent
    before = _duplicates()
    again = await core.deliver(item)
    assert {r.outcome for r in again} == {"skipped"} and _duplicates() == before + 2
    assert len(scp.text_srs) == 1 and fhir.transactions == 1

    # a changed draft is a new version: sent again, the FHIR resources updated in place
    changed = ReportVersion(make_report(impression="Cardiomegaly. No acute disease."))
    await core.deliver(changed)
    assert len(fhir.all("DiagnosticReport")) == 1 and len(fhir.all("Observation")) == 2 and len(fhir.all("Device")) == 1
    assert fhir.all("DiagnosticReport")[0]["conclusion"] == "Cardiomegaly. No acute disease."
    assert fhir.all("DiagnosticReport")[0]["meta"]["versionId"] == "2"
    assert len(scp.text_srs) == 2 and scp.text_srs[1].SOPInstanceUID != scp.text_srs[0].SOPInstanceUID


async def test_the_final_report_is_just_another_version(scp, fhir):
    core = _core([_pacs(scp.port), _ehr(fhir)])
    draft = ReportVersion(make_report())
    await core.deliver(draft)
    final = ReportVersion(make_report(), status="final", verifier="Rad^Ann", verified_at=datetime(2026, 11, 27, 11, 0, tzinfo=UTC))
    assert {r.outcome for r in await core.deliver(final)} == {"delivered"}
    (dr,) = fhir.all("DiagnosticReport")
    assert dr["status"] == "final" and {o["status"] for o in fhir.all("Observation")} == {"final"}
    assert len(fhir.all("Provenance")) == 2  # one per delivered version
    assert scp.text_srs[-1].VerificationFlag == "VERIFIED" and scp.text_srs[-1].CompletionFlag == "COMPLETE"
    # a late redelivery of the draft never replaces the signed report
    assert {r.outcome for r in await core.deliver(draft)} == {"skipped"}
    assert fhir.all("DiagnosticReport")[0]["status"] == "final"


async def test_a_destination_that_is_down_is_retried_recorded_and_resent_later(fhir):
    records = MemoryDeliveryRecords()
    dead_port = free_port()
    core = _core([_pacs(dead_port), _ehr(fhir)], records)
    item = ReportVersion(make_report())
    retries_before = metrics.RETRIES.labels(stage="delivery", dependency="delivery:pacs")._value.get()
    with pytest.raises(DeliveryFailed) as failure:
        await core.deliver(item)
    assert "pacs" in str(failure.value) and not failure.value.permanent
    assert metrics.RETRIES.labels(stage="delivery", dependency="delivery:pacs")._value.get() == retries_before + FAST.attempts - 1
    pacs_row = records.rows[(item.report.report_id, "pacs")]
    assert pacs_row.status == "failed" and pacs_row.attempts == FAST.attempts and "no association" in pacs_row.last_error
    assert records.rows[(item.report.report_id, "ehr")].status == "delivered"  # the other destination was not held up

    # the PACS comes back; a replay of the dead letter sends only what is missing
    scp = StoreSCP()
    port = scp.start()
    try:
        core.senders["pacs"] = _pacs(port)
        results = {r.destination: r.outcome for r in await core.deliver(item)}
        assert results == {"pacs": "delivered", "ehr": "skipped"}
        assert len(scp.text_srs) == 1 and fhir.transactions == 1
        assert records.rows[(item.report.report_id, "pacs")].attempts == FAST.attempts + 1
    finally:
        scp.stop()


async def test_content_refused_by_the_destination_is_a_permanent_failure(fhir):
    # an R4 server refuses the R5 resources (fhir.resources validation: R5-only elements)
    r4_server = LoopbackFhirServer("R4")
    r4_server.start()
    seed_patient(r4_server)
    try:
        core = _core([_ehr(r4_server, version="R5")])
        with pytest.raises(PermanentError) as refused:
            await core.deliver(ReportVersion(make_report()))
        assert "HTTP 400" in refused.value.reason and "OperationOutcome: structure" in refused.value.reason
        assert r4_server.rejected and r4_server.transactions == 0
        # with the destination set to R4 the same report is accepted
        ok = _core([_ehr(r4_server, version="R4")])
        assert [r.outcome for r in await ok.deliver(ReportVersion(make_report()))] == ["delivered"]
        assert r4_server.all("DiagnosticReport")[0]["imagingStudy"][0]["identifier"]["value"].startswith("urn:oid:")
    finally:
        r4_server.stop()


async def test_a_dicom_refusal_is_permanent():
    scp = StoreSCP(status=0xA900)  # "data set does not match SOP class"
    port = scp.start()
    try:
        with pytest.raises(PermanentError, match="0xA900"):
            await _core([_pacs(port)]).deliver(ReportVersion(make_report()))
        assert len(scp.text_srs) == 1  # one attempt: a refusal is not retried
    finally:
        scp.stop()


async def test_oauth_client_credentials(monkeypatch):
    server = LoopbackFhirServer("R5", client_id="radalign", client_secret="right")
    server.start()
    seed_patient(server)
    try:
        auth = ClientCredentialsAuth(type="oauth2-client-credentials", token_url=server.token_url, client_id="radalign", client_secret_env="EHR_SECRET")
        monkeypatch.setenv("EHR_SECRET", "wrong")
        with pytest.raises(PermanentError, match="refused the client credentials"):
            await _core([_ehr(server, auth=auth)]).deliver(ReportVersion(make_report()))
        monkeypatch.setenv("EHR_SECRET", "right")
        sender = _ehr(server, auth=auth)
        assert [r.outcome for r in await _core([sender]).deliver(ReportVersion(make_report()))] == ["delivered"]
        assert len(server.tokens) == 1 and server.all("DiagnosticReport")
        no_auth = _core([_ehr(server)])
        with pytest.raises(DeliveryFailed, match="HTTP 401"):  # retried (a token may have expired), then failed
            await no_auth.deliver(ReportVersion(make_report(impression="Changed.")))
    finally:
        server.stop()


async def test_no_identity_mapping_is_a_permanent_failure(fhir):
    core = DeliveryCore({"ehr": _ehr(fhir)}, MemoryDeliveryRecords(), StaticReidentifier({}), Settings())
    with pytest.raises(PermanentError, match="no identity mapping"):
        await core.deliver(ReportVersion(make_report()))


async def test_no_destinations_is_a_no_op():
    assert await DeliveryCore({}, MemoryDeliveryRecords(), StaticReidentifier({}), Settings()).deliver(ReportVersion(make_report())) == []


def test_sr_delivered_reads_back_with_highdicom():
    from radalign.delivery.senders import sr_for
    from radalign.reports.sr import basic_text_sr_bytes

    item = ReportVersion(make_report())
    ds = sr_for(item, make_identity())
    data = basic_text_sr_bytes(item.report, make_identity(), created=item.issued, document_version=item.version)
    assert read_sr_text(data)["impression"] == "Cardiomegaly." and ds.SOPInstanceUID
    assert dataclasses.replace(item, status="preliminary").version == item.version
    with pytest.raises(ValueError):
        ReportVersion(make_report(), status="final")


def test_a_signed_report_is_the_draft_with_the_signed_text_delivered_as_final():
    from radalign.delivery.version import final_version
    from radalign.review.signers import Signer
    from schemas.events import ReportDrafted, ReportFinal
    from schemas.examples import EXAMPLES

    draft = ReportDrafted.model_validate(EXAMPLES["report_drafted"][0])
    signed = ReportFinal.model_validate(EXAMPLES["report_final"][0])
    signer = Signer(signed.signer_key, "Ann Rad", "att-1")
    version = final_version(draft, signed, signer)
    assert version.status == "final" and version.verifier_pn == "Rad^Ann" and version.issued == signed.signed_at
    assert signed.signer_key not in version.verifier_pn and version.signature.labels == signed.labels
    assert (version.report.findings, version.report.impression) == (signed.findings, signed.impression)
    assert version.report.report_id == draft.report_id and version.report.concepts == draft.concepts
    assert version.version != final_version(draft, signed.model_copy(update={"impression": "Amended."}), signer).version


async def test_the_ai_results_sr_is_optional_and_never_blocks_the_report(fhir):
    text_only = StoreSCP(ai_results=False)  # a PACS that takes no Comprehensive 3D SR
    port = text_only.start()
    try:
        results = await _core([_pacs(port)]).deliver(ReportVersion(make_report()))
        assert [r.outcome for r in results] == ["delivered"] and len(text_only.text_srs) == 1 and text_only.ai_srs == []
    finally:
        text_only.stop()
    scp = StoreSCP()
    port = scp.start()
    try:
        await _core([_pacs(port, ai_results_sr=False)]).deliver(ReportVersion(make_report()))
        assert len(scp.text_srs) == 1 and scp.ai_srs == []
    finally:
        scp.stop()
