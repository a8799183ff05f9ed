from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from radalign.ingest.refusal import DICOM_STATUS, RefusalReason
from radalign.samples import chest_cr_path, chest_jpeg_paths
from radalign.testing.ingest import bad_dicom_corpus, dicom_bytes, synthetic_radiograph
from services.gateway.http_app import build_gateway_app

AUTH = {"Authorization": "Bearer tok-2"}


@pytest.fixture
async def client(settings, publisher, blobs, pseudonyms):
    app = build_gateway_app(settings, publisher, blobs, pseudonyms)
    async with TestClient(TestServer(app)) as c:
        yield c


async def _stow(client: TestClient, *parts: tuple[bytes, str], headers: dict | None = None):
    writer = aiohttp.MultipartWriter("related", boundary="radalign-test-boundary")
    for data, ctype in parts:
        writer.append(data, {"Content-Type": ctype})
    ctype = 'multipart/related; type="application/dicom"; boundary=radalign-test-boundary'
    return await client.post("/dicomweb/studies", data=writer, headers={**AUTH, "Content-Type": ctype, **(headers or {})})


async def _wait_events(publisher, n: int, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if len(publisher.events) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {n} events, got {len(publisher.events)}")


async def _publish_pending(client: TestClient) -> None:
    """Publishes every study still pending now (no quiet period): afterwards the publisher holds all
    the gateway will ever publish of what was sent, so "nothing more" can be asserted without waiting."""
    from services.gateway.http_app import CORE_KEY

    await client.app[CORE_KEY].flush(force=True)


async def test_stow_rs_stores_a_real_cr_and_reports_bad_parts(client, publisher) -> None:
    path = chest_cr_path("RG1_UNCI.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed")
    corpus = bad_dicom_corpus(synthetic_radiograph())
    resp = await _stow(client, (path.read_bytes(), "application/dicom"), (corpus["ct_modality"][0], "application/dicom"),
                       (corpus["random_bytes"][0], "application/dicom"))
    assert resp.status == 202 and resp.content_type == "application/dicom+json"
    body = await resp.json()
    [ok] = body["00081199"]["Value"]
    assert ok["00081155"]["Value"] == [str(__import__("pydicom").dcmread(path).SOPInstanceUID)]
    reasons = sorted(item["00081197"]["Value"][0] for item in body["00081198"]["Value"])
    assert reasons == sorted([DICOM_STATUS[RefusalReason.UNSUPPORTED_MODALITY], DICOM_STATUS[RefusalReason.UNREADABLE]])
    await _wait_events(publisher, 1)
    await _publish_pending(client)
    assert len(publisher.events) == 1 and len(publisher.events[0].instances) == 1  # no partial/bad study


async def test_stow_rs_all_failed_is_409_and_nothing_published(client, publisher) -> None:
    corpus = bad_dicom_corpus(synthetic_radiograph())
    resp = await _stow(client, *((data, "application/dicom") for data, _ in corpus.values()))
    assert resp.status == 409
    body = await resp.json()
    assert len(body["00081198"]["Value"]) == len(corpus)
    assert not body.get("00081199", {}).get("Value")
    await _publish_pending(client)
    assert publisher.events == []


async def test_http_form_with_real_jpeg(client, publisher, blobs) -> None:
    paths = chest_jpeg_paths()
    if not paths:
        pytest.skip("pneumonia-model-package is not installed")
    form = aiohttp.FormData()
    form.add_field("file", paths[3].read_bytes(), filename="x.jpeg", content_type="image/jpeg")
    for name, value in {"study_id": "ORD-9", "patient_id": "MRN-1", "view_position": "PA", "priority": "stat"}.items():
        form.add_field(name, value)
    resp = await client.post("/v1/studies", data=form, headers=AUTH)
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["status"] == "accepted" and body["study_key"].startswith("st-") and "ORD-9" not in json.dumps(body)
    await _wait_events(publisher, 1)
    [(topic, event)] = publisher.records
    assert topic.endswith(".stat") and event.source == "http" and event.study.study_key == body["study_key"]


async def _problem(resp, status: int, reason: str) -> None:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["status"] == status and body["reason"] == reason and body["title"] and body["type"]


async def test_request_level_refusals_are_problem_json_and_service_keeps_serving(client, publisher) -> None:
    data = dicom_bytes(synthetic_radiograph())
    await _problem(await client.post("/v1/studies", data=b"x"), 401, "unauthorized")
    await _problem(await client.post("/v1/studies", data=b"x", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
    await _problem(await client.post("/dicomweb/studies", data=data, headers={**AUTH, "Content-Type": "application/dicom"}),
                   415, "unsupported_media_type")
    await _problem(await client.post("/v1/studies", data=b"{}", headers={**AUTH, "Content-Type": "application/json"}),
                   415, "unsupported_media_type")
    form = aiohttp.FormData()
    form.add_field("file", data, filename="x.dcm", content_type="application/dicom")
    form.add_field("study_id", "S-1")
    await _problem(await client.post("/v1/studies", data=form, headers=AUTH), 415, "unsupported_media_type")
    form = aiohttp.FormData()
    form.add_field("study_id", "S-1")
    form.add_field("file", b"", filename="x.png", content_type="image/png")
    form.add_field("surprise", "1")
    await _problem(await client.post("/v1/studies", data=form, headers=AUTH), 422, "invalid_metadata")
    await _problem(await client.get("/nowhere", headers=AUTH), 404, "http_404")
    assert (await client.get("/health/live")).status == 200
    assert (await client.get("/health/ready")).status == 200
    assert publisher.events == []


async def _raw_request(host: str, port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(head + body)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), timeout=5)
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data


async def test_claimed_two_gigabytes_is_refused_before_reading(client, publisher) -> None:
    host, port = client.server.host, client.server.port
    head = (
        b"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-1\r\n"
        b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
        b"Content-Length: 2147483648\r\n\r\n"
    )
    status, raw = await _raw_request(host, port, head, b"--b\r\n")
    assert status == 413 and b"application/problem+json" in raw and b"too_large" in raw
    # Same without Content-Length (chunked): counted while reading.
    resp = await _stow(client, (b"\x00" * (17 * 1024 * 1024), "application/dicom"))
    await _problem(resp, 413, "too_large")
    assert (await client.get("/health/live")).status == 200
    assert publisher.events == []


async def test_huge_header_is_refused_by_the_parser_and_the_server_keeps_serving(client) -> None:
    host, port = client.server.host, client.server.port
    head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * 100_000 + b"\r\n\r\n"
    status, _ = await _raw_request(host, port, head)
    assert status in (400, 431)
    assert (await client.get("/health/live")).status == 200


async def test_database_down_answers_503_with_retry_after_and_accepts_nothing(settings, publisher, blobs, pseudonyms) -> None:
    from radalign.ingest.outbox import InMemoryOutbox

    class DownOutbox(InMemoryOutbox):
        async def add(self, item):
            raise ConnectionError("database down (simulated)")

    app = build_gateway_app(settings, publisher, blobs, pseudonyms, outbox=DownOutbox())
    async with TestClient(TestServer(app)) as client:
        resp = await _stow(client, (dicom_bytes(synthetic_radiograph()), "application/dicom"))
        body = await resp.json()
        assert resp.status == 409 and body["00081198"]["Value"][0]["00081197"]["Value"] == [0xA700]
        form = aiohttp.FormData()
        form.add_field("file", _tiny_png(), filename="a.png", content_type="image/png")
        form.add_field("study_id", "S-DOWN")
        resp = await client.post("/v1/studies", data=form, headers=AUTH)
        assert resp.status == 503 and resp.headers["Retry-After"] and (await resp.json())["reason"] == "unavailable"
    assert publisher.events == []


async def test_a_dead_assembler_fails_liveness_and_refuses_new_work(client) -> None:
    core = client.app[__import__("services.gateway.http_app", fromlist=["CORE_KEY"]).CORE_KEY]
    assert (await client.get("/health/live")).status == 200
    core.assembler._task.cancel()  # what a crash that supervision could not restart leaves behind
    await asyncio.sleep(0.05)
    assert (await client.get("/health/live")).status == 503
    form = aiohttp.FormData()
    form.add_field("file", _tiny_png(), filename="a.png", content_type="image/png")
    form.add_field("study_id", "S-DEAD")
    resp = await client.post("/v1/studies", data=form, headers=AUTH)
    assert resp.status == 503 and resp.headers["Retry-After"]


def _tiny_png() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32), 128, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_stow_rs_reports_an_sr_stored_and_drops_it(client, publisher) -> None:
    """A whole study sent by STOW-RS (an image and our SR): both reported stored (HTTP 200, no
    FailedSOPSequence), the study published with the image only."""
    from prometheus_client import REGISTRY

    from radalign.testing.ingest import synthetic_non_image

    labels = {"source": "dicomweb-stow", "sop_class": "sr"}
    before = REGISTRY.get_sample_value("radalign_gateway_ignored_instances_total", labels) or 0.0
    image = synthetic_radiograph()
    sr = synthetic_non_image(study_uid=image.StudyInstanceUID)
    resp = await _stow(client, (dicom_bytes(image), "application/dicom"), (dicom_bytes(sr), "application/dicom"))
    assert resp.status == 200
    body = await resp.json()
    assert "00081198" not in body
    stored = {item["00081155"]["Value"][0]: item["00081150"]["Value"][0] for item in body["00081199"]["Value"]}
    assert stored == {image.SOPInstanceUID: image.SOPClassUID, sr.SOPInstanceUID: sr.SOPClassUID}
    assert REGISTRY.get_sample_value("radalign_gateway_ignored_instances_total", labels) == before + 1
    await _wait_events(publisher, 1)
    await _publish_pending(client)
    assert len(publisher.events) == 1 and len(publisher.events[0].instances) == 1
