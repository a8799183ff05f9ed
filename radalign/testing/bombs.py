"""A generated corpus of decompression bombs and oversize inputs, and a probe that measures each.

Every case is small on the wire and huge once decoded (or declares it is). `probe` runs one case
through the gateway's checks (parse, refusal rules, de-identification, encoding) or through the
preprocess decode, in a fresh subprocess with its address space capped at the stage's pod memory
limit, and reports the outcome and the peak resident memory. `main` prints the table:

    python -m radalign.testing.bombs            # every case, both stages
"""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

from radalign.testing.ingest import dicom_bytes, synthetic_radiograph

#: Pod memory limits (radalign/deploy.py) the probes run under.
POD_LIMIT_MB = {"gateway": 1024, "preprocess": 2048}


@dataclass(frozen=True)
class BombCase:
    name: str
    kind: str  # dicom, png, jpeg
    data: bytes
    #: What the gateway must answer: a refusal reason, or "accepted".
    gateway: str
    #: What preprocess must do with it, had it reached the blob store: "refused" or "decoded".
    preprocess: str
    note: str


def _rle_zero_frame(rows: int, columns: int) -> bytes:
    """One 8-bit RLE frame of zeros: a 64-byte header and runs of 128 (PS3.5 G.3)."""
    runs = -(-rows * columns // 128)
    header = struct.pack("<16I", 1, 64, *([0] * 14))
    return header + b"\x81\x00" * runs


def _rle_dataset(frames: list[bytes], rows: int, columns: int) -> bytes:
    ds = synthetic_radiograph(rows=8, columns=8)
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.NumberOfFrames = len(frames)
    ds.PixelData = encapsulate(frames, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    return dicom_bytes(ds)


def _deflated_bomb(rows: int, columns: int) -> bytes:
    """Deflated Explicit VR Little Endian whose Pixel Data inflates to rows x columns x 2 bytes."""
    ds = synthetic_radiograph(rows=rows, columns=columns)
    del ds.PixelData
    meta = ds.file_meta
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    length = rows * columns * 2
    body.write(b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", length))
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    compressed = bytearray(packer.compress(body.getvalue()))
    chunk = b"\x00" * (1 << 20)
    for _ in range(length // len(chunk)):
        compressed += packer.compress(chunk)
    compressed += packer.compress(b"\x00" * (length % len(chunk))) + packer.flush()
    return out.getvalue() + bytes(compressed)


def _png_bomb(side: int) -> bytes:
    """An 8-bit grey PNG of side x side zeros, written row by row (never held whole)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    packer = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    idat = bytearray()
    for _ in range(side):
        idat += packer.compress(row)
    idat += packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", bytes(idat)) + chunk(b"IEND", b"")


def _jpeg_with_dims(height: int, width: int) -> bytes:
    """A real small JPEG whose SOF0 header is patched to declare height x width."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bomb_corpus() -> list[BombCase]:
    longer = synthetic_radiograph(rows=64, columns=64)
    longer.PixelData = b"\x00" * (8 * 1024 * 1024)
    huge = synthetic_radiograph(rows=8, columns=8)
    huge.Rows = huge.Columns = 60000
    frame = _rle_zero_frame(1024, 1024)
    segment_bomb = struct.pack("<16I", 1, 64, *([0] * 14)) + b"\x81\x00" * (4 * 1024 * 1024)
    return [
        BombCase("deflated_dicom", "dicom", _deflated_bomb(10000, 10000), "unsupported_transfer_syntax", "refused",
                 "Deflated data set inflating to 200 MB"),
        BombCase("multiframe_rle_over_budget", "dicom", _rle_dataset([frame] * 120, 1024, 1024), "too_large", "refused",
                 "120 RLE frames of 1024x1024: 126 Mpx in all"),
        BombCase("multiframe_rle_in_budget", "dicom", _rle_dataset([frame] * 20, 1024, 1024), "accepted", "decoded",
                 "20 RLE frames of 1024x1024: only the first is decoded"),
        BombCase("rle_segment_bomb", "dicom", _rle_dataset([segment_bomb], 512, 512), "too_large", "refused",
                 "one 512x512 frame whose RLE segment expands to 512 MB"),
        BombCase("pixeldata_longer_than_declared", "dicom", dicom_bytes(longer), "unreadable", "refused",
                 "64x64 declared, 8 MB of Pixel Data"),
        BombCase("huge_declared_dimensions", "dicom", dicom_bytes(huge), "too_large", "refused",
                 "Rows = Columns = 60000"),
        BombCase("png_7745_squared", "png", _png_bomb(7745), "too_large", "refused", "60 Mpx of zeros in a small PNG"),
        BombCase("jpeg_declares_30000_squared", "jpeg", _jpeg_with_dims(30000, 30000), "too_large", "refused",
                 "SOF header of 30000x30000"),
    ]


def _run_gateway(kind: str, data: bytes, max_pixels: int) -> str:
    from radalign.ingest.deid import Pseudonymizer, deidentify, encode_dicom
    from radalign.ingest.dicom import check_dicom, read_dicom
    from radalign.ingest.images import open_raster, sniff_raster, strip_raster_metadata
    from radalign.ingest.refusal import Refusal

    try:
        if kind == "dicom":
            ds = read_dicom(data)
            check_dicom(ds, max_pixels=max_pixels)
            encode_dicom(deidentify(ds, Pseudonymizer("bomb-probe"))[0])
        else:
            if sniff_raster(data) is None:
                return "unsupported_media_type"
            open_raster(data, decode=False, max_pixels=max_pixels)
            strip_raster_metadata(data)
    except Refusal as refusal:
        return refusal.reason.value
    return "accepted"


def _run_preprocess(kind: str, data: bytes, max_pixels: int) -> str:
    from radalign.preprocess.core import PreprocessError, decode_instance
    from schemas.events import BlobRef, Instance

    blob = BlobRef(uri="file:///probe", sha256="0" * 64, size=len(data), media_type="application/octet-stream")
    instance = Instance(instance_key="in-0000000000000000", source_format=kind, blob=blob)  # type: ignore[arg-type]  # kind is one of the Literal values (the corpus builds only those)
    try:
        image = decode_instance(instance, data, max_pixels)
    except PreprocessError:
        return "refused"
    return "decoded" if image.ndim == 2 else f"shape {image.shape}"


def _probe_main(stage: str, kind: str, path: str, max_pixels: int) -> None:
    limit = POD_LIMIT_MB[stage] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # the pod limit, enforced
    data = Path(path).read_bytes()
    try:
        outcome = (_run_gateway if stage == "gateway" else _run_preprocess)(kind, data, max_pixels)
    except MemoryError:
        outcome = "memory_error"
    print(json.dumps({"outcome": outcome, "peak_rss_mb": round(peak_rss_mb(), 1)}))


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: Linux carries the
    parent's peak across fork and exec into it, which would hide the probe's own figure."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe(case: BombCase, stage: str, max_pixels: int = 25_000_000) -> dict:
    """Run `case` through `stage` (gateway or preprocess) in a fresh capped subprocess."""
    with tempfile.NamedTemporaryFile(suffix=f".{case.kind}") as fh:
        fh.write(case.data)
        fh.flush()
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            [sys.executable, "-m", "radalign.testing.bombs", "--probe", stage, case.kind, fh.name, str(max_pixels)],
            capture_output=True, text=True, timeout=300, env=env, check=False,
        )
    if done.returncode != 0:
        return {"outcome": f"crashed ({done.returncode}): {done.stderr.strip()[-300:]}", "peak_rss_mb": float("nan")}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    print(f"{'case':32} {'bytes':>10}  {'gateway':28} {'peak MB':>8}  {'preprocess':10} {'peak MB':>8}")
    for case in bomb_corpus():
        g, p = probe(case, "gateway"), probe(case, "preprocess")
        print(f"{case.name:32} {len(case.data):>10}  {g['outcome']:28} {g['peak_rss_mb']:>8}  {p['outcome']:10} {p['peak_rss_mb']:>8}",
              flush=True)
    print(f"pod limits (RLIMIT_AS in each probe): {POD_LIMIT_MB}")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--probe":
        _probe_main(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
