"""Reports store and re-identification on a real PostgreSQL: idempotent upserts of drafted
reports (migration 030) and the identity lookup on the gateway's pseudonym tables (010)."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydicom import dcmread

from radalign.config import Settings
from radalign.drafting.core import DraftingCore
from radalign.reports.reidentification import PostgresReidentifier
from radalign.reports.store import ReportStore
from schemas.events import Certainty, Observation, StageTiming
from services.drafting.read_api import build_read_routes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "drafting"))
from drafting_helpers import make_event  # after the helpers folder is on sys.path

pytestmark = pytest.mark.integration

KEY = "st-00112233445566ff"


# `pool` (tests/integration/conftest.py): this module's database, these tables emptied per test.
DATABASE = "reports_it"
EMPTIED_TABLES = ("reports", "study_pseudonyms")


async def _draft(labels, study_key=KEY, pipeline="radalign-test"):
    event = make_event(labels, [("iu-1", "The heart is enlarged. No pleural effusion.", "Cardiomegaly.")], study_key=study_key)
    event = event.model_copy(update={"study": event.study.model_copy(update={"pipeline_version": pipeline})})
    return await DraftingCore(Settings(), None).draft(event)


async def test_upsert_is_idempotent(pool):
    store = ReportStore(pool)
    report = await _draft({Observation.CARDIOMEGALY: Certainty.PRESENT})
    assert await store.upsert(report) is True
    first = await store.get_stored(KEY)
    assert first is not None and first.report == report

    # a replay drafts the same text with other timings (the runner times each attempt): nothing changes
    replay = await _draft({Observation.CARDIOMEGALY: Certainty.PRESENT})
    replay = replay.model_copy(update={"timings": [StageTiming(stage="drafting", started_at=datetime.now(UTC), duration_ms=12.5)]})
    assert replay.timings != report.timings and replay.report_id == report.report_id
    assert await store.upsert(replay) is False
    assert await store.upsert(report) is False
    unchanged = await store.get_stored(KEY)
    assert unchanged.updated_at == first.updated_at and unchanged.report == report

    # a changed draft of the same (study, pipeline version) replaces the row: still one row
    changed = await _draft({Observation.CARDIOMEGALY: Certainty.PRESENT, Observation.PNEUMOTHORAX: Certainty.PRESENT})
    assert await store.upsert(changed) is False
    assert (await store.get(KEY)).critical == [Observation.PNEUMOTHORAX]
    async with pool.connection() as conn:
        count = await (await conn.execute("SELECT count(*) FROM reports WHERE study_key = %s", (KEY,))).fetchone()
    assert count[0] == 1

    # concurrent replays insert exactly once
    other = await _draft({Observation.EDEMA: Certainty.PRESENT}, study_key="st-00112233445566aa")
    results = await asyncio.gather(*(store.upsert(other) for _ in range(4)))
    assert sorted(results) == [False, False, False, True]


async def test_get_prefers_the_latest_pipeline_version_unless_named(pool):
    store = ReportStore(pool)
    old = await _draft({Observation.CARDIOMEGALY: Certainty.PRESENT}, pipeline="radalign-0.1")
    new = await _draft({Observation.EDEMA: Certainty.PRESENT}, pipeline="radalign-0.2")
    assert await store.upsert(old) and await store.upsert(new)
    assert (await store.get(KEY)).report_id == new.report_id
    assert (await store.get(KEY, "radalign-0.1")).report_id == old.report_id
    assert await store.get("st-ffffffffffffffff") is None


async def test_reidentifier_and_read_api_on_the_gateway_tables(pool):
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO study_pseudonyms (study_key, patient_key, study_instance_uid, patient_id, patient_name,"
            " accession_number, routing, source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (KEY, "pt-0011223344556677", "1.2.826.0.1.3680043.8.498.10", "MRN-7", "Doe^John", "ACC-7",
             json.dumps({"PlacerOrderNumberImagingServiceRequest": "ORD-7", "StudyID": "S7"}), "dicom-cstore"),
        )
        await conn.execute(
            "INSERT INTO instance_pseudonyms (instance_key, study_key, sop_instance_uid, series_instance_uid, sop_class_uid)"
            " VALUES (%s, %s, %s, %s, %s)",
            ("in-0011223344556677", KEY, "1.2.826.0.1.3680043.8.498.12", "1.2.826.0.1.3680043.8.498.11", "1.2.840.10008.5.1.4.1.1.1"),
        )
    reidentifier = PostgresReidentifier(pool)
    identity = await reidentifier.lookup(KEY)
    assert identity is not None and identity.patient_id == "MRN-7" and identity.accession_number == "ACC-7"
    # the placer order number is an identifier, not a FHIR id: no literal ServiceRequest/ORD-7
    assert identity.placer_order_number == "ORD-7" and identity.service_request_id == "" and identity.study_id == "S7"
    assert identity.instances[0].sop_instance_uid == "1.2.826.0.1.3680043.8.498.12"
    assert await reidentifier.lookup("st-ffffffffffffffff") is None

    store = ReportStore(pool)
    await store.upsert(await _draft({Observation.CARDIOMEGALY: Certainty.PRESENT}))
    app = web.Application()
    app.add_routes(build_read_routes(store, reidentifier))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        fhir = await client.get(f"/v1/studies/{KEY}/report", headers={"Accept": "application/fhir+json"})
        body = json.loads(await fhir.text())
        assert "reference" not in body["basedOn"][0] and body["basedOn"][0]["identifier"]["value"] == "ACC-7"
        sr = await client.get(f"/v1/studies/{KEY}/report?format=sr")
        ds = dcmread(BytesIO(await sr.read()))
        assert ds.PatientName == "Doe^John" and ds.StudyID == "S7"
        missing = await client.get("/v1/studies/st-ffffffffffffffff/report")
        assert missing.status == 404
