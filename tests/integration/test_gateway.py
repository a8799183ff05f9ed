"""The gateway end to end on the real broker and PostgreSQL: C-STORE, STOW-RS and HTTP in, one
study event per study on Kafka (real aiokafka producer), model inputs from the preprocess core,
documented refusals for a bad-input corpus, and no identifier in events, logs or metrics."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
import pydicom
import pytest
from aiokafka import AIOKafkaConsumer
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ComputedRadiographyImageStorage, Verification

from radalign.blobstore import open_blob_store
from radalign.config import Settings
from radalign.framework import codec
from radalign.ingest.images import decode_npy
from radalign.ingest.refusal import DICOM_STATUS, RefusalReason
from radalign.preprocess.core import preprocess
from radalign.samples import chest_cr_path, chest_jpeg_paths
from radalign.testing.ingest import bad_dicom_corpus, dicom_bytes, with_changes
from schemas.events import StudyReceived
from schemas.topics import STUDY_RECEIVED
from services.gateway.runner import run_gateway

pytestmark = pytest.mark.integration
TOKEN = "it-token"


def _cstore(port: int, ds: pydicom.Dataset) -> tuple[int, int]:
    ae = AE(ae_title="IT-MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    for syntax in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.91"):
        ae.add_requested_context(ComputedRadiographyImageStorage, syntax)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADALIGN")
    assert assoc.is_established
    try:
        return assoc.send_c_echo().Status, assoc.send_c_store(ds).Status
    finally:
        assoc.release()


async def _wait_http(url: str, timeout_s: float = 20.0) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(int(timeout_s / 0.1)):
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never became ready")


async def _consume(settings: Settings, expected: int, since: datetime, timeout_s: float = 20.0) -> list[tuple[bytes, list, StudyReceived]]:
    """The study events published since `since`: the topic is shared with the session's other
    tests (the delivery test routes a CR through this gateway topic too)."""
    consumer = AIOKafkaConsumer(
        *STUDY_RECEIVED.names, bootstrap_servers=settings.kafka_bootstrap, group_id=None,
        auto_offset_reset="earliest", enable_auto_commit=False, request_timeout_ms=15000,
    )
    await consumer.start()
    found = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(found) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                found.extend((r.value, list(r.headers or []), codec.decode(StudyReceived, r.value)) for r in records)
            found = [f for f in found if f[2].study.received_at >= since]
        await asyncio.sleep(1.0)  # anything beyond the expected events would arrive now
        for records in (await consumer.getmany(timeout_ms=500)).values():
            found.extend((r.value, list(r.headers or []), codec.decode(StudyReceived, r.value)) for r in records)
    finally:
        await consumer.stop()
    return [f for f in found if f[2].study.received_at >= since]


async def test_gateway_end_to_end(embedded_stack: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    unc, j2k, jpegs = chest_cr_path("RG1_UNCI.dcm"), chest_cr_path("RG1_J2KI.dcm"), chest_jpeg_paths()
    if unc is None or j2k is None or not jpegs:
        pytest.skip("pydicom-data and pneumonia-model-package are needed")
    caplog.set_level(logging.DEBUG)
    settings = embedded_stack.model_copy(update={
        "gateway_tokens": TOKEN, "study_quiet_s": 0.5, "deid_secret": "integration-secret",
        "blob_url": (tmp_path / "blobs").as_uri(), "gateway_max_bytes": 32 * 1024 * 1024,
        "patient_issuers": "dicom-cstore:IT-MODALITY=IT-SITE-A",  # the C-STORE sender's site
    })
    base = f"http://{settings.gateway_host}:{settings.gateway_port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    stop = asyncio.Event()
    started = datetime.now(UTC)
    gateway = asyncio.create_task(run_gateway(settings, stop))
    try:
        await _wait_http(f"{base}/health/ready")
        # 1. C-STORE: the real JPEG 2000 CR.
        real = pydicom.dcmread(j2k)
        echo, stored = await asyncio.to_thread(_cstore, settings.dicom_port, real)
        assert (echo, stored) == (0x0000, 0x0000)
        ct = with_changes(real, Modality="CT")
        _, refused = await asyncio.to_thread(_cstore, settings.dicom_port, ct)
        assert refused == DICOM_STATUS[RefusalReason.UNSUPPORTED_MODALITY]

        # 2. STOW-RS: the uncompressed copy as another study, plus the bad corpus.
        other = with_changes(pydicom.dcmread(unc), StudyInstanceUID=generate_uid(), SOPInstanceUID=generate_uid())
        other.file_meta.MediaStorageSOPInstanceUID = other.SOPInstanceUID
        corpus = bad_dicom_corpus(pydicom.dcmread(unc))
        writer = aiohttp.MultipartWriter("related")
        for data in [dicom_bytes(other), *(d for d, _ in corpus.values())]:
            writer.append(data, {"Content-Type": "application/dicom"})
        writer.headers["Content-Type"] = f'multipart/related; type="application/dicom"; boundary={writer.boundary}'
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.post(f"{base}/dicomweb/studies", data=writer) as resp:
                assert resp.status == 202
                body = await resp.json()
            assert len(body["00081199"]["Value"]) == 1
            assert sorted(i["00081197"]["Value"][0] for i in body["00081198"]["Value"]) == sorted(
                DICOM_STATUS[r] for _, r in corpus.values())

            # 3. HTTP form: a real chest JPEG; then request-level refusals.
            form = aiohttp.FormData()
            form.add_field("file", jpegs[0].read_bytes(), filename="a.jpeg", content_type="image/jpeg")
            form.add_field("study_id", "IT-ORDER-1")
            form.add_field("patient_id", "IT-MRN-1")
            async with http.post(f"{base}/v1/studies", data=form) as resp:
                assert resp.status == 202
            async with http.post(f"{base}/v1/studies", data=b"x", headers={"Content-Type": "text/plain"}) as resp:
                assert resp.status == 415 and resp.content_type == "application/problem+json"
            reader, w = await asyncio.open_connection(settings.gateway_host, settings.gateway_port)
            w.write(b"POST /v1/studies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                    + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 2147483648\r\n\r\n")
            await w.drain()
            head = await asyncio.wait_for(reader.read(4096), timeout=5)
            w.close()
            assert head.startswith(b"HTTP/1.1 413") and b"problem+json" in head
            async with http.get(f"{base}/health/live", headers={"X-Huge": "a" * 70_000}) as resp:
                assert resp.status in (400, 431)
            async with http.get(f"{base}/metrics") as resp:
                metrics_text = await resp.text()
            assert 'radalign_gateway_instances_refused_total{reason="unsupported_modality",source="dicom-cstore"}' in metrics_text

        records = await _consume(settings, expected=3, since=started)
    finally:
        stop.set()
        await asyncio.wait_for(gateway, timeout=30)

    # At-least-once: under load the outbox may publish a study again (same event id, which consumers
    # de-duplicate on); what must hold is three distinct studies, each published as one event id.
    ids = {codec.header(headers, "ce_id"): event for _, headers, event in records}
    assert len(ids) == 3, [(r[2].source, r[2].study_version, len(r[2].instances)) for r in records]
    events = {event.source: event for _, _, event in records}
    assert set(events) == {"dicom-cstore", "dicomweb-stow", "http"}
    assert all(len(e.instances) == 1 and e.study_version == 1 for e in events.values())
    # The site configured for the calling AE travels through the PostgreSQL outbox; other sources have none.
    assert {source: e.site for source, e in events.items()} == {"dicom-cstore": "IT-SITE-A", "dicomweb-stow": None, "http": None}

    blobs = open_blob_store(settings.blob_root)
    for source, event in events.items():
        result = preprocess(event, blobs)
        assert result.site == event.site and not result.not_chest_radiograph
        image = decode_npy(blobs.get(result.model_input))
        assert image.shape == (1, 224, 224) and image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
        if source != "http":  # the CR: MONOCHROME1 inverted, lungs dark, mediastinum bright
            band = image[0, 80:120]
            assert band[:, 104:120].mean() > np.concatenate([band[:, 55:75], band[:, 150:170]], axis=1).mean() + 0.2

    # The mapping is in PostgreSQL, identifiers are nowhere else.
    from radalign.db import connect

    with connect(settings.dsn, settings=settings) as conn:
        rows = dict(conn.execute("SELECT study_key, patient_id FROM study_pseudonyms").fetchall())
    assert rows[events["dicom-cstore"].study.study_key] == real.PatientID
    assert rows[events["http"].study.study_key] == "IT-MRN-1"
    identifiers = [str(real.PatientName), real.PatientID, real.StudyInstanceUID, real.SOPInstanceUID, real.SeriesInstanceUID,
                   real.AccessionNumber, real.StudyDate, real.PatientBirthDate, other.StudyInstanceUID, other.SOPInstanceUID,
                   "IT-ORDER-1", "IT-MRN-1"]
    published = b" ".join(value + b" ".join(v for _, v in headers) for value, headers, _ in records).decode(errors="replace")
    for where, text in {"events": published, "logs": caplog.text, "metrics": metrics_text}.items():
        for value in identifiers:
            assert value not in text, f"{value!r} leaked into {where}"
