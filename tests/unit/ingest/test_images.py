from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from radalign.ingest.images import decode_npy, encode_npy, open_raster, resize_and_pad, strip_raster_metadata, to_grayscale_array
from radalign.ingest.refusal import Refusal, RefusalReason


def test_resize_keeps_aspect_and_pads_centred() -> None:
    image = np.ones((200, 100), dtype=np.float32)
    out = resize_and_pad(image, 224)
    assert out.shape == (224, 224) and out.dtype == np.float32
    filled = np.argwhere(out > 0.5)
    cols = filled[:, 1]
    assert cols.min() == 56 and cols.max() == 167  # 112 wide, centred
    assert out[:, :50].max() == 0.0
    np.testing.assert_array_equal(decode_npy(encode_npy(out[None])), out[None])


def test_png_metadata_is_stripped_and_pixels_kept() -> None:
    pixels = (np.arange(64 * 32) % 256).astype(np.uint8).reshape(64, 32)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "Patient: John Q Public 1234567")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", pnginfo=info)
    assert b"John Q Public" in buffer.getvalue()
    cleaned = strip_raster_metadata(buffer.getvalue())
    assert b"John Q Public" not in cleaned
    np.testing.assert_array_equal(np.asarray(open_raster(cleaned)), pixels)


def test_jpeg_metadata_is_stripped_without_re_encoding() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (48, 40), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x010E] = "Patient: John Q Public 1234567"  # ImageDescription
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90, exif=exif, comment=b"MRN 1234567")
    original = buffer.getvalue()
    assert b"John Q Public" in original and b"MRN 1234567" in original
    cleaned = strip_raster_metadata(original)
    assert b"John Q Public" not in cleaned and b"MRN 1234567" not in cleaned
    # The compressed pixels are untouched: decoding gives exactly the same array as the original.
    np.testing.assert_array_equal(np.asarray(open_raster(cleaned)), np.asarray(open_raster(original)))
    assert len(cleaned) < len(original)


def test_malformed_containers_are_refused() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(buffer, format="JPEG")
    with pytest.raises(ValueError):
        strip_raster_metadata(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ValueError):
        strip_raster_metadata(b"GIF89a")


def test_sixteen_bit_png_keeps_depth() -> None:
    pixels = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    gray = to_grayscale_array(open_raster(buffer.getvalue()))
    assert gray.max() == pytest.approx(1.0) and gray[1, 0] == pytest.approx(0.5, abs=1e-3)


def test_truncated_and_foreign_images_are_refused() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((300, 300), dtype=np.uint8) + 7).save(buffer, format="JPEG")
    with pytest.raises(Refusal) as caught:
        open_raster(buffer.getvalue()[:200])
    assert caught.value.reason is RefusalReason.UNREADABLE
    gif = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(gif, format="GIF")
    with pytest.raises(Refusal) as caught:
        open_raster(gif.getvalue())
    assert caught.value.reason is RefusalReason.UNSUPPORTED_MEDIA_TYPE
