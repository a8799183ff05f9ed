"""docs/conformance: the committed documents are what `radalign conformance render` gives, and they
name every HTTP route of the apps' routers, every Kafka topic of the catalogue, every SOP class and
transfer syntax the gateway offers and the delivery stage proposes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radalign.config import Settings
from radalign.ingest.dicom import ACCEPTED_SOP_CLASSES, IGNORED_SOP_CLASSES
from radalign.pipeline import ALL_TOPICS
from radalign.reports.sr import BASIC_TEXT_SR
from schemas.events import schema_file
from services import conformance
from services.gateway import dicom_scp

REPO = Path(__file__).resolve().parents[3]
DOCS = REPO / conformance.DOCS_DIR


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return conformance.render_all()


def _doc(name: str) -> dict:
    return json.loads((DOCS / name).read_text(encoding="utf-8"))


def test_committed_documents_are_current(rendered):
    stale = conformance.stale_files(REPO, rendered)
    assert not stale, f"stale conformance documents {stale}: run `radalign conformance render`"


def test_a_changed_document_is_stale(tmp_path, rendered):
    for rel, text in rendered.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    assert conformance.stale_files(tmp_path, rendered) == []
    target = tmp_path / conformance.DOCS_DIR / "asyncapi.json"
    target.write_text(target.read_text().replace("radalign.report.final.v1", "radalign.report.gone.v1"))
    (tmp_path / conformance.DOCS_DIR / "openapi-review.json").unlink()
    assert sorted(conformance.stale_files(tmp_path, rendered)) == [f"{conformance.DOCS_DIR}/asyncapi.json", f"{conformance.DOCS_DIR}/openapi-review.json"]


def _router_routes() -> dict[str, set[tuple[str, str]]]:
    """Each service's routes, straight from its aiohttp router (independently of the generator)."""
    from services.delivery.agent import DeliveryStage
    from services.drafting.read_api import build_read_routes
    from services.gateway.http_app import build_gateway_app
    from services.review.app import build_review_app

    settings = Settings()
    gateway = build_gateway_app(settings, None, None, None)  # type: ignore[arg-type]
    review = build_review_app(None, settings)  # type: ignore[arg-type]
    return {
        "gateway": {(r.method, r.resource.canonical) for r in gateway.router.routes() if r.resource is not None},
        "drafting": {(r.method, r.path) for r in build_read_routes(None, None)},  # type: ignore[arg-type, attr-defined]
        "delivery": {(r.method, r.path) for r in DeliveryStage(settings).routes()},
        "review": {(r.method, r.resource.canonical) for r in review.router.routes() if r.resource is not None},
    }


@pytest.mark.parametrize("service", ["gateway", "drafting", "delivery", "review"])
def test_every_route_is_in_the_openapi_document(service):
    doc = _doc(f"openapi-{service}.json")
    assert doc["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    missing = {(m, p) for m, p in _router_routes()[service] if m != "HEAD"} - documented
    assert not missing, f"routes of {service} missing from docs/conformance/openapi-{service}.json: {sorted(missing)}"
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert op["summary"] != f"{op} {path}" and op["responses"], (path, op)
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == set(conformance._path_params(path)), path


@pytest.mark.parametrize("service", ["gateway", "drafting", "delivery", "review"])
def test_openapi_documents_validate(service):
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(_doc(f"openapi-{service}.json"))


def test_the_generator_would_document_a_new_route():
    routes = {"gateway": [("GET", "/v1/new/{thing}")]}
    doc = conformance.openapi("gateway", routes["gateway"])
    assert doc["paths"]["/v1/new/{thing}"]["get"]["parameters"][0]["name"] == "thing"


def test_every_topic_is_an_asyncapi_channel_with_its_contract():
    doc = _doc("asyncapi.json")
    assert doc["asyncapi"].startswith("2.")
    expected = {name: spec for spec in ALL_TOPICS for name in spec.names}
    assert set(doc["channels"]) == set(expected), "a topic is missing from (or extra in) docs/conformance/asyncapi.json"
    for name, spec in expected.items():
        channel = doc["channels"][name]
        assert channel["bindings"]["kafka"]["partitions"] == spec.partitions
        ref = channel["subscribe"]["message"]["$ref"].rsplit("/", 1)[1]
        assert ref == spec.contract.__name__
        payload = (DOCS / doc["components"]["messages"][ref]["payload"]["$ref"]).resolve()
        assert payload.is_file(), payload
        assert payload == schema_file(spec.contract).resolve()


def test_dicom_conformance_statement_lists_what_the_code_offers():
    text = (DOCS / "dicom-conformance-statement.md").read_text(encoding="utf-8")
    for uid in [*ACCEPTED_SOP_CLASSES, *IGNORED_SOP_CLASSES, BASIC_TEXT_SR, "1.2.840.10008.1.1"]:
        assert f"`{uid}`" in text, uid
    for ts in [*dicom_scp._UNCOMPRESSED, *dicom_scp._COMPRESSED]:
        assert f"`{ts}`" in text, ts
    assert "113100" in text and f"`{Settings.model_fields['dicom_ae_title'].default}`" in text
    for section in ("Application Entities", "Gateway SCP", "Delivery SCU", "De-identification"):
        assert section in text


def test_fhir_capability_statement_is_valid_r5():
    from fhir.resources.capabilitystatement import CapabilityStatement

    doc = _doc("fhir-capability-statement.json")
    parsed = CapabilityStatement.model_validate(doc) if hasattr(CapabilityStatement, "model_validate") else CapabilityStatement.parse_obj(doc)
    modes = {r.mode for r in parsed.rest}
    assert modes == {"server", "client"}
    client = next(r for r in parsed.rest if r.mode == "client")
    assert {r.type for r in client.resource} >= {"DiagnosticReport", "Observation"}
