"""The signed record end to end on a real PostgreSQL (migration 091) with a real MLLP listener
(python-hl7's asyncio server) and the loopback FHIR server: a resident signs (preliminary), an
attending co-signs (final) and amends (amended); the review service stores every version and the
reviewer mapping; the delivery stage re-identifies the signers and sends each version as an HL7
ORU^R01 (OBR-25 P, F, C; OBR-32) and a FHIR transaction; the ACK is acted on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from radalign.config import Settings
from radalign.delivery.hl7 import message_control_id
from radalign.loopback.fhir_server import LoopbackFhirServer
from radalign.loopback.mllp import MllpListener
from radalign.review.core import ReviewCore
from radalign.review.signers import PostgresSigners
from radalign.review.store import ReviewStore
from radalign.testing.stack import emptied_pool, fresh_database
from schemas.events import ReportFinal, ReviewRole
from services.delivery.agent import DeliveryStage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

KEY = "st-00112233445566ee"


@pytest.fixture(scope="module")
def signed_settings(embedded_stack: Settings) -> Iterator[Settings]:
    with fresh_database(embedded_stack, "signed_it") as settings:
        yield settings


class Publisher:
    def __init__(self) -> None:
        self.events: list[ReportFinal] = []

    async def publish(self, spec, event, *, traceparent=None, ev_id=None) -> None:
        self.events.append(event)


@pytest.fixture
async def seeded(signed_settings: Settings) -> AsyncIterator:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "delivery"))
    from delivery_helpers import make_report

    from radalign.reports.store import ReportStore

    async with emptied_pool(signed_settings, "report_finals", "reviewer_identities", "reports", "deliveries", "study_pseudonyms") as pool:
        async with pool.connection() as conn:
            await conn.execute(
                "INSERT INTO study_pseudonyms (study_key, patient_key, study_instance_uid, patient_id, patient_name, accession_number, routing, source) "
                "VALUES (%s, 'pt-0011223344556677', '1.2.826.0.1.3680043.8.498.77', 'MRN-77', 'Roe^Rita', 'ACC-77', %s, 'http')",
                (KEY, json.dumps({"IssuerOfPatientID": "1.2.3.4.5", "StudyDate": "20261127", "StudyTime": "085900"})),
            )
        draft = make_report(key=KEY)
        await ReportStore(pool).upsert(draft)
        yield pool, draft


async def _stage(settings: Settings, ris: MllpListener, fhir: LoopbackFhirServer) -> DeliveryStage:
    destinations = [
        {"name": "ris", "kind": "hl7", "host": "127.0.0.1", "port": ris.port, "receiving_facility": "HOSP",
         "retry": {"attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.05, "timeout_s": 5}},
        {"name": "ehr", "kind": "fhir", "base_url": fhir.base_url, "version": "R4", "patient": "create", "order": "identifier"},
    ]
    stage = DeliveryStage(settings.model_copy(update={"delivery_destinations": json.dumps({"destinations": destinations})}))
    await stage.setup(settings)
    return stage


async def _drain(stage: DeliveryStage) -> None:
    """What the stage's lanes do beside the consumer (the runner runs them): send every queued
    version, destination by destination, until nothing is left to do now."""
    for lane in stage.lanes.values():
        while await lane.step():
            pass


async def test_resident_attending_amendment_to_the_ris_and_the_ehr(signed_settings: Settings, seeded):
    pool, draft = seeded
    publisher = Publisher()
    core = ReviewCore(signed_settings, ReviewStore(pool), None, publisher, signers=PostgresSigners(pool))  # type: ignore[arg-type]
    sign = dict(findings=draft.findings, report_id=draft.report_id)
    await core.sign(KEY, impression="Cardiomegaly.", signer_name="Rex Resident", signer_role=ReviewRole.RESIDENT,
                    signer_identifier="res-7", family_name="Resident", given_name="Rex", **sign)
    assert [d.study.study_key for d in await core.store.unsigned_drafts()] == [KEY]  # waiting for the co-signature
    await core.sign(KEY, impression="Cardiomegaly, confirmed.", signer_name="Ann Attending", signer_role=ReviewRole.RADIOLOGIST,
                    signer_identifier="att-1", family_name="Attending", given_name="Ann", **sign)
    assert await core.store.unsigned_drafts() == []
    await core.sign(KEY, impression="Cardiomegaly. Small effusion.", signer_name="Ann Attending", signer_role=ReviewRole.RADIOLOGIST,
                    signer_identifier="att-1", family_name="Attending", given_name="Ann", **sign)
    assert [(e.version, e.status, e.replaces_version) for e in publisher.events] == [(1, "preliminary", None), (2, "final", 1), (3, "amended", 2)]
    assert await core.store.history(KEY) == [(1, "preliminary"), (2, "final"), (3, "amended")]

    # a signed version is a record: never changed, never deleted
    async with pool.connection() as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="never changed"):
            await conn.execute("UPDATE report_finals SET payload = '{}'::jsonb WHERE study_key = %s", (KEY,))
    async with pool.connection() as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="never deleted"):
            await conn.execute("DELETE FROM report_finals WHERE study_key = %s", (KEY,))

    ris, fhir = MllpListener(), LoopbackFhirServer("R4")
    ris.start()
    fhir.start()
    stage = await _stage(signed_settings, ris, fhir)
    try:
        await stage.handle(draft)  # the AI draft: to the EHR as preliminary, not to the RIS
        for event in publisher.events:
            await stage.handle(event)
        await _drain(stage)
        await stage.handle(publisher.events[1])  # a redelivered event changes nothing
        await _drain(stage)
        messages = ris.messages()
        assert [str(m.segment("OBR")(25)) for m in messages] == ["P", "F", "C"]
        assert [str(m.segment("OBR")(32)).split("&")[:3] for m in messages] == [
            ["res-7", "Resident", "Rex"], ["att-1", "Attending", "Ann"], ["att-1", "Attending", "Ann"]]
        assert str(messages[1].segment("OBR")(33)).startswith("res-7&Resident&Rex")  # the co-signed resident
        assert str(messages[0].segment("PID")(3)) == "MRN-77^^^1.2.3.4.5^MR"
        assert len({str(m.segment("MSH")(10)) for m in messages}) == 3
        assert "rd-" not in "".join(str(m) for m in messages) and "rd-" not in json.dumps(fhir.resources)
        (dr,) = fhir.all("DiagnosticReport")
        assert dr["status"] == "amended" and [p["display"] for p in dr["performer"]] == ["Ann Attending"]
        rows = {r.destination: r for r in await stage.records.for_study(KEY)}  # type: ignore[union-attr]
        assert rows["ris"].status == "delivered" and rows["ris"].report_version.startswith("v3-amended-")
    finally:
        await stage.close()
        ris.stop()
        fhir.stop()


async def test_a_ris_refusal_is_permanent_with_its_reason(signed_settings: Settings, seeded):
    pool, draft = seeded
    publisher = Publisher()
    core = ReviewCore(signed_settings, ReviewStore(pool), None, publisher, signers=PostgresSigners(pool))  # type: ignore[arg-type]
    await core.sign(KEY, findings=draft.findings, impression="Cardiomegaly.", report_id=draft.report_id, signer_name="Ann Attending",
                    signer_role=ReviewRole.RADIOLOGIST, signer_identifier="att-1")
    ris, fhir = MllpListener(ack_code="AE", reason="Unknown order"), LoopbackFhirServer("R4")
    ris.start()
    fhir.start()
    stage = await _stage(signed_settings, ris, fhir)
    try:
        (final,) = publisher.events
        await stage.handle(final)
        await _drain(stage)
        assert len(ris.messages()) == 1  # refused once, not retried
        rows = {r.destination: r for r in await stage.records.for_study(KEY)}  # type: ignore[union-attr]
        assert rows["ris"].status == "failed" and "AE: Unknown order" in rows["ris"].last_error
        assert rows["ehr"].status == "delivered"  # destinations are independent
        assert await stage.lanes["ris"].step() is False  # dead-lettered as refused: never resent by itself
        # a replay after the RIS was fixed sends the same message (same control id)
        ris.ack_code = "AA"
        ris.reason = ""
        await stage.handle(final)
        await _drain(stage)
        first, second = ris.messages()
        assert str(first.segment("MSH")(10)) == str(second.segment("MSH")(10))
    finally:
        await stage.close()
        ris.stop()
        fhir.stop()
    assert message_control_id  # imported for readers: MSH-10 is derived per version
