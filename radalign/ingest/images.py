"""Plain images (PNG/JPEG) at the gateway, and the model-input geometry shared by every source."""

from __future__ import annotations

import io
import warnings
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from radalign.ingest.refusal import Refusal, RefusalReason
from schemas.model_input import INPUT_SIZE

#: Formats accepted over HTTP, by what Pillow detects in the bytes (never by the file name).
RASTER_FORMATS = {"PNG": "png", "JPEG": "jpeg"}
#: Default width x height limit (`Settings.max_image_pixels`); checked from the header, before decoding.
MAX_RASTER_PIXELS = 25_000_000
# Pillow's own decompression-bomb guard (a warning above the limit, an error above twice it) is
# set to the same budget, so any other code path that opens an image is bounded too.
Image.MAX_IMAGE_PIXELS = MAX_RASTER_PIXELS


def set_pixel_limit(max_pixels: int) -> None:
    """Apply `Settings.max_image_pixels` to Pillow's bomb guard (workers call it at start)."""
    global MAX_RASTER_PIXELS
    MAX_RASTER_PIXELS = Image.MAX_IMAGE_PIXELS = int(max_pixels)


def sniff_raster(data: bytes) -> Literal["png", "jpeg"] | None:
    """'png' or 'jpeg' from the magic bytes, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


def open_raster(data: bytes, *, decode: bool = True, max_pixels: int | None = None) -> Image.Image:
    """Open a PNG/JPEG; refuse anything else and pixel bombs (width x height over `max_pixels`,
    default `MAX_RASTER_PIXELS`, judged from the header before any decoding). With `decode`,
    decode the pixels now (a truncated file fails here); without it only the header is read (the
    gateway: pixels are decoded once, in preprocess, and the container walk below catches
    truncated files)."""
    limit = MAX_RASTER_PIXELS if max_pixels is None else max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in RASTER_FORMATS:
                raise Refusal(RefusalReason.UNSUPPORTED_MEDIA_TYPE, f"image format {image.format} is not PNG or JPEG")
            if image.width * image.height > limit:
                raise Refusal(RefusalReason.TOO_LARGE, f"image of {image.width}x{image.height} pixels is too large")
            if decode:
                image.load()
    except Refusal:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise Refusal(RefusalReason.TOO_LARGE, "image dimensions exceed the pixel budget") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise Refusal(RefusalReason.UNREADABLE, f"image could not be decoded ({type(exc).__name__})") from exc
    return image


def to_grayscale_array(image: Image.Image) -> np.ndarray:
    """float32 in [0, 1]; 16-bit PNGs keep their depth, colour is reduced to luminance."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        return np.clip(values / peak, 0.0, 1.0)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        lo, hi = float(values.min()), float(values.max())
        return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    if image.mode != "L":
        image = image.convert("L")  # RGB, RGBA, P, LA, CMYK -> ITU-R 601 luma
    return np.asarray(image, dtype=np.float32) / 255.0


# Metadata is removed by rewriting the container, not by re-encoding the pixels: the image data
# stays byte-identical (lossless for JPEG too) and it costs ~0.1 ms instead of ~60 ms for a PNG
# re-encode of a 1776x1416 film (measured in benchmarks/pipeline_bench.py's gateway figure).
# Neither Pillow nor a maintained library strips JPEG/PNG metadata without re-encoding, so the
# two small container walkers below are written here.

#: PNG chunks that carry pixels or how to render them; everything else (tEXt, zTXt, iTXt, eXIf,
#: tIME, iCCP, private chunks) may carry text and is dropped.
_PNG_KEEP = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"bKGD", b"pHYs"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _strip_png(data: bytes) -> bytes:
    out = bytearray(_PNG_SIGNATURE)
    i = len(_PNG_SIGNATURE)
    while i + 8 <= len(data):
        length = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8]
        end = i + 12 + length  # length, type, data, CRC
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        if kind in _PNG_KEEP:
            out += data[i:end]
        i = end
        if kind == b"IEND":
            return bytes(out)
    raise ValueError("PNG without IEND")


_JFIF_PLAIN_LENGTH = 16  # length field of an APP0 JFIF header without thumbnail
_ADOBE_PLAIN_LENGTH = 14  # length field of the fixed-size APP14 "Adobe" segment


def _jpeg_segment_kept(marker: int, segment: bytes) -> bytes | None:
    """The segment to write (`segment` includes marker and length), or None to drop it.

    Every APPn and COM segment is dropped (EXIF, XMP, IPTC, ICC, free text, an APP0 that names the
    patient) except two whose layout is fixed and carries no text: a plain JFIF header (its
    thumbnail, which is an image and could show burned-in text, is cut off) and Adobe's APP14,
    which only holds the colour-transform flags a decoder needs for 3- and 4-component images.
    """
    if marker == 0xFE:
        return None
    if marker == 0xE0:
        body = segment[4:]
        if not body.startswith(b"JFIF\x00") or len(body) < 14:
            return None
        plain = bytearray(segment[: 2 + _JFIF_PLAIN_LENGTH])
        plain[2:4] = _JFIF_PLAIN_LENGTH.to_bytes(2, "big")
        plain[16:18] = b"\x00\x00"  # no thumbnail
        return bytes(plain)
    if marker == 0xEE:
        length = int.from_bytes(segment[2:4], "big")
        return segment if length == _ADOBE_PLAIN_LENGTH and segment[4:9] == b"Adobe" else None
    if 0xE1 <= marker <= 0xEF:
        return None
    return segment


def _strip_jpeg(data: bytes) -> bytes:
    out = bytearray(b"\xff\xd8")
    i, n = 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:
            raise ValueError("JPEG: expected a marker")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == 0xD9:  # EOI
            return bytes(out + b"\xff\xd9")
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers
            out += data[i : i + 2]
            i += 2
            continue
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if end > n:
            raise ValueError("truncated JPEG segment")
        kept = _jpeg_segment_kept(marker, data[i:end])
        if kept is not None:
            out += kept
        i = end
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            j = i
            while True:
                j = data.index(b"\xff", j)  # ValueError when the scan is truncated
                follower = data[j + 1] if j + 1 < n else 0xD9
                if follower == 0x00 or 0xD0 <= follower <= 0xD7 or follower == 0xFF:
                    j += 1 if follower == 0xFF else 2  # stuffed byte, restart marker, fill byte
                    continue
                break
            out += data[i:j]
            i = j
    raise ValueError("JPEG without EOI")


def strip_raster_metadata(data: bytes) -> bytes:
    """The same PNG/JPEG without the chunks and segments that can carry text (a file's metadata
    may name the patient); pixels untouched. Raises ValueError for a malformed container."""
    if data.startswith(_PNG_SIGNATURE):
        return _strip_png(data)
    if data.startswith(b"\xff\xd8"):
        return _strip_jpeg(data)
    raise ValueError("not a PNG or JPEG")


def resize_and_pad(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Keep the aspect ratio, fit the longer side to `size`, pad the rest with 0 (black), centred.

    Pillow's resampling filters widen with the reduction factor, so a 2000 px film shrinks with
    proper anti-aliasing (a plain bilinear lookup would alias the rib edges).
    """
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"expected a non-empty 2-D image, got shape {image.shape}")
    rows, cols = image.shape
    scale = size / max(rows, cols)
    new_rows, new_cols = max(1, round(rows * scale)), max(1, round(cols * scale))
    resized = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32)).resize(
        (new_cols, new_rows), Image.Resampling.BILINEAR
    )
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - new_rows) // 2, (size - new_cols) // 2
    out[top : top + new_rows, left : left + new_cols] = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    return out


def encode_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)
