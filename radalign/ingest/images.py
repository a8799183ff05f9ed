"""Plain images (PNG/JPEG) at the gateway, and the model-input geometry shared by every source."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from radalign.ingest.refusal import Refusal, RefusalReason

#: Formats accepted over HTTP, by what Pillow detects in the bytes (never by the file name).
RASTER_FORMATS = {"PNG": "png", "JPEG": "jpeg"}
MAX_RASTER_PIXELS = 60_000_000


def sniff_raster(data: bytes) -> str | None:
    """'png' or 'jpeg' from the magic bytes, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


def open_raster(data: bytes) -> Image.Image:
    """Open and fully decode a PNG/JPEG; refuse anything else, truncated files and pixel bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in RASTER_FORMATS:
                raise Refusal(RefusalReason.UNSUPPORTED_MEDIA_TYPE, f"image format {image.format} is not PNG or JPEG")
            if image.width * image.height > MAX_RASTER_PIXELS:
                raise Refusal(RefusalReason.TOO_LARGE, f"image of {image.width}x{image.height} pixels is too large")
            image.load()  # decodes now: a truncated file fails here, not later in preprocess
    except Refusal:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
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


def clean_raster(image: Image.Image) -> bytes:
    """The pixels only, as a PNG with no text/EXIF/ICC chunks: a file's metadata may name the
    patient. Lossless: a JPEG is stored as its decoded pixels."""
    if image.mode not in ("L", "I;16", "I"):
        image = image.convert("L")
    if image.mode == "I":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 65535).astype(np.uint16))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()


def resize_and_pad(image: np.ndarray, size: int = 224) -> np.ndarray:
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
