"""GET /v1/studies/{study_key}/report: content negotiation, re-identification, RFC 7807 errors."""

import json
from datetime import UTC, datetime
from io import BytesIO

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from drafting_helpers import make_event
from pydicom import dcmread

from radalign.config import Settings
from radalign.drafting.core import DraftingCore
from radalign.reports.reidentification import StaticReidentifier, StudyIdentity
from radalign.reports.store import StoredReport
from schemas.events import Certainty, Observation
from services.drafting.read_api import build_read_routes, negotiate

KEY = "st-0123456789abcdef"
ORPHAN = "st-aaaaaaaaaaaaaaaa"  # a report whose identity mapping is gone


class MemoryStore:
    """The part of ReportStore the read API uses."""

    def __init__(self, reports):
        now = datetime(2026, 11, 27, 21, 0, tzinfo=UTC)
        self.rows = {r.study.study_key: StoredReport(r, now, now) for r in reports}

    async def get_stored(self, study_key, pipeline_version=None):
        return self.rows.get(study_key)


@pytest.fixture
async def client():
    core = DraftingCore(Settings(), None)
    labels = {Observation.CARDIOMEGALY: Certainty.PRESENT}
    reports = [await core.draft(make_event(labels, [], study_key=key)) for key in (KEY, ORPHAN)]
    identity = StudyIdentity(study_key=KEY, study_instance_uid="1.2.3.4", patient_id="MRN-1", patient_name="Doe^Jane", accession_number="A1")
    app = web.Application()
    app.add_routes(build_read_routes(MemoryStore(reports), StaticReidentifier({KEY: identity})))
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("accept", "query", "expected"),
    [
        (None, None, "json"),
        ("*/*", None, "json"),
        ("application/fhir+json", None, "fhir"),
        ("application/dicom", None, "sr"),
        ("application/dicom;q=0.5, application/fhir+json;q=0.9", None, "fhir"),
        ("application/fhir+json;q=0, application/json", None, "json"),
        ("text/html", None, None),
        ("text/html", "sr", "sr"),
        (None, "pdf", None),
    ],
)
def test_negotiate(accept, query, expected):
    assert negotiate(accept, query) == expected


async def test_json_is_the_pseudonymous_event(client):
    response = await client.get(f"/v1/studies/{KEY}/report")
    assert response.status == 200 and response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert body["study"]["study_key"] == KEY and "MRN-1" not in json.dumps(body)


async def test_fhir_and_sr_are_reidentified(client):
    response = await client.get(f"/v1/studies/{KEY}/report", headers={"Accept": "application/fhir+json"})
    assert response.status == 200 and response.content_type == "application/fhir+json"
    body = json.loads(await response.text())
    assert body["resourceType"] == "DiagnosticReport" and body["subject"]["identifier"]["value"] == "MRN-1"

    response = await client.get(f"/v1/studies/{KEY}/report?format=sr")
    assert response.status == 200 and response.content_type == "application/dicom"
    ds = dcmread(BytesIO(await response.read()))
    assert ds.PatientID == "MRN-1" and ds.VerificationFlag == "UNVERIFIED"


async def test_problems(client):
    for url, headers, status in (
        ("/v1/studies/st-ffffffffffffffff/report", {}, 404),
        ("/v1/studies/x/report", {}, 404),
        (f"/v1/studies/{KEY}/report", {"Accept": "text/html"}, 406),
        (f"/v1/studies/{KEY}/report?format=pdf", {}, 406),
        (f"/v1/studies/{ORPHAN}/report?format=fhir", {}, 404),
    ):
        response = await client.get(url, headers=headers)
        assert response.status == status, url
        assert response.content_type == "application/problem+json"
        problem = json.loads(await response.text())
        assert problem["status"] == status and problem["title"] and problem["detail"]
    # the orphan's pseudonymous JSON is still served
    assert (await client.get(f"/v1/studies/{ORPHAN}/report")).status == 200


async def test_drafting_service_serves_the_read_api_behind_bearer_tokens():
    """The worker's routes: the read API serves re-identified reports, so it takes the gateway's tokens."""
    from services.drafting.agent import DraftingStage

    core = DraftingCore(Settings(), None)
    report = await core.draft(make_event({Observation.CARDIOMEGALY: Certainty.PRESENT}, [], study_key=KEY))
    settings = Settings(gateway_tokens="tok-1")
    stage = DraftingStage(settings)
    stage.store = MemoryStore([report])  # what setup() would open against PostgreSQL
    stage.reidentifier = StaticReidentifier({})
    app = web.Application(middlewares=stage.middlewares(settings))  # as the stage runner builds it
    for route in stage.routes():
        app.router.add_route(route.method, route.path, route.handler)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        denied = await client.get(f"/v1/studies/{KEY}/report")
        assert denied.status == 401 and denied.content_type == "application/problem+json"
        allowed = await client.get(f"/v1/studies/{KEY}/report", headers={"Authorization": "Bearer tok-1"})
        assert allowed.status == 200 and (await allowed.json())["report_id"] == report.report_id


async def test_the_pull_api_serves_the_latest_signed_version_with_its_status():
    """After sign-off the read API serves the latest signed version (never the superseded
    draft), names its status and version, re-identifies the signers, and keeps earlier versions."""
    from radalign.review.signers import Signer
    from radalign.review.signoff import build_final
    from schemas.events import ReviewRole

    core = DraftingCore(Settings(), None)
    report = await core.draft(make_event({Observation.CARDIOMEGALY: Certainty.PRESENT}, [], study_key=KEY))
    resident = Signer("rd-aaaaaaaaaaaaaaaa", "Rex Resident", "res-7", role="resident")
    attending = Signer("rd-bbbbbbbbbbbbbbbb", "Ann Attending", "att-1")
    v1 = build_final(report, findings="Heart enlarged.", impression="Cardiomegaly.", signer_key=resident.reviewer_key,
                     signer_role=ReviewRole.RESIDENT, version=1, labels={Observation.CARDIOMEGALY: Certainty.PRESENT}, status="preliminary")
    v2 = build_final(report, findings="Heart enlarged.", impression="Cardiomegaly, confirmed.", signer_key=attending.reviewer_key,
                     signer_role=ReviewRole.RADIOLOGIST, version=2, labels={Observation.CARDIOMEGALY: Certainty.PRESENT}, status="final",
                     replaces_version=1)

    class Signed:
        def __init__(self) -> None:
            self.versions: list = []

        async def finals(self, study_key):
            return [(f, "x") for f in self.versions if f.study.study_key == study_key]

        async def signer(self, key):
            return {s.reviewer_key: s for s in (resident, attending)}.get(key)

    signed = Signed()
    identity = StudyIdentity(study_key=KEY, study_instance_uid="1.2.3.4", patient_id="MRN-1", patient_name="Doe^Jane")
    app = web.Application()
    app.add_routes(build_read_routes(MemoryStore([report]), StaticReidentifier({KEY: identity}), signed=signed))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        r = await client.get(f"/v1/studies/{KEY}/report")
        assert r.headers["X-Report-Status"] == "draft" and r.headers["X-Report-Version"] == "0"
        signed.versions = [v1]
        r = await client.get(f"/v1/studies/{KEY}/report")
        assert r.headers["X-Report-Status"] == "preliminary" and (await r.json())["final_id"] == v1.final_id
        signed.versions = [v1, v2]
        r = await client.get(f"/v1/studies/{KEY}/report?format=fhir")
        dr = await r.json()
        assert r.headers["X-Report-Status"] == "final" and r.headers["X-Report-Version"] == "2"
        assert dr["status"] == "final" and dr["conclusion"] == "Cardiomegaly, confirmed."
        assert [p["display"] for p in dr["resultsInterpreter"]] == ["Ann Attending", "Rex Resident"]
        assert "rd-" not in json.dumps(dr)
        r = await client.get(f"/v1/studies/{KEY}/report?format=sr")
        ds = dcmread(BytesIO(await r.read()))
        assert ds.VerificationFlag == "VERIFIED" and str(ds.VerifyingObserverSequence[0].VerifyingObserverName) == "Attending^Ann"
        r = await client.get(f"/v1/studies/{KEY}/report?version=1&format=fhir")
        assert (await r.json())["status"] == "preliminary" and r.headers["X-Report-Version"] == "1"
        assert (await client.get(f"/v1/studies/{KEY}/report?version=9")).status == 404
        # without the signer mapping, no re-identified record (never a pseudonym as the signer)
        resident_missing = Signed()
        resident_missing.versions = [v1]
        resident_missing.signer = lambda key: _none()
        app2 = web.Application()
        app2.add_routes(build_read_routes(MemoryStore([report]), StaticReidentifier({KEY: identity}), signed=resident_missing))
    async with TestClient(TestServer(app2, host="127.0.0.1")) as client2:
        assert (await client2.get(f"/v1/studies/{KEY}/report?format=fhir")).status == 404


async def _none():
    return None
