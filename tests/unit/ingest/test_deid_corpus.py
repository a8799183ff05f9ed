"""A de-identification corpus with the same identifier in every place the issue-12 audit found
(and a few more): nothing of it may reach the blob store, the event, the logs or the metrics."""

from __future__ import annotations

import io
import logging
import struct

import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY, generate_latest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from radalign.ingest.deid import Pseudonymizer, deidentify, encode_dicom
from radalign.ingest.dicom import check_dicom, read_dicom
from radalign.ingest.gateway import GatewayCore
from radalign.ingest.images import strip_raster_metadata
from radalign.ingest.refusal import Refusal, RefusalReason
from radalign.testing.ingest import dicom_bytes, synthetic_radiograph

NAME = "HAZELNUTIDENT"  # one upper-case word: it fits every CS/LO/PN value and is easy to find


def _code(meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "R-10206", "SRT", meaning
    item.PatientName = NAME  # a name nested where no name belongs
    return item


def identified_radiograph() -> Dataset:
    ds = synthetic_radiograph(view=None, patient_id=NAME)
    ds.PatientName = f"{NAME}^JOHN"
    ds.ViewPosition = NAME  # free text instead of PA/AP
    ds.BodyPartExamined = NAME
    ds.ImageType = ["ORIGINAL", "PRIMARY", NAME]
    ds.ConversionType = NAME
    ds.PatientOrientation = [NAME, "F"]
    ds.RescaleType = NAME
    ds.SeriesDescription = f"chest PA of {NAME}"
    view = _code(f"postero-anterior {NAME}")
    view.ViewModifierCodeSequence = Sequence([_code(NAME)])
    ds.ViewCodeSequence = Sequence([view])
    voi = Dataset()
    voi.add_new(0x00283002, "US", [4, 0, 12])  # LUTDescriptor
    voi.LUTExplanation = NAME
    voi.add_new(0x00283006, "US", [0, 1000, 2000, 4095])  # LUTData
    voi.PatientName = NAME
    ds.VOILUTSequence = Sequence([voi])
    ds.add_new(0x00091010, "LO", NAME)  # private tag
    ds.add_new(0x00091011, "SQ", Sequence([_code(NAME)]))
    ds.InstitutionName = NAME
    ds.OperatorsName = NAME
    return ds


def test_identifiers_in_every_retained_place_are_removed() -> None:
    source = identified_radiograph()
    clean, _ = deidentify(source, Pseudonymizer("s"))
    data = encode_dicom(clean)
    assert NAME.encode() not in data.upper()
    reread = read_dicom(data)
    facts = check_dicom(reread)
    assert facts.view_position is None  # free text is not a view
    assert "ImageType" not in reread  # one value outside the closed set drops the attribute
    assert reread.ViewCodeSequence[0].CodeValue == "R-10206" and "CodeMeaning" not in reread.ViewCodeSequence[0]
    assert list(reread.VOILUTSequence[0].LUTData) == [0, 1000, 2000, 4095]  # what decoding needs stays
    assert str(source.ViewPosition) == NAME and "PatientName" in source.VOILUTSequence[0]  # the input is untouched


def test_burned_in_annotation_is_refused_unless_configured() -> None:
    ds = synthetic_radiograph()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(Refusal) as refused:
        deidentify(ds, Pseudonymizer("s"))
    assert refused.value.reason is RefusalReason.BURNED_IN_ANNOTATION and refused.value.dicom_status == 0xA900
    clean, _ = deidentify(ds, Pseudonymizer("s"), refuse_burned_in=False)
    assert clean.BurnedInAnnotation == "YES"  # the flag travels with the object when a site allows it


async def test_the_gateway_publishes_no_identifier_from_the_corpus(settings, publisher, blobs, pseudonyms, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    core = GatewayCore(settings, publisher, blobs, pseudonyms)
    await core.ingest_dicom(dicom_bytes(identified_radiograph()), "dicomweb-stow")
    burned = synthetic_radiograph()
    burned.BurnedInAnnotation = "YES"
    with pytest.raises(Refusal):
        await core.ingest_dicom(dicom_bytes(burned), "dicom-cstore")
    await core.ingest_image(_jpeg_with_identifiers(), study_id="S-1", patient_id=NAME, view_position="PA")
    await core.ingest_image(_png_with_identifiers(), study_id="S-2", patient_id=NAME)
    events = await core.flush(force=True)
    assert len(events) == 3
    texts = {"events": " ".join(e.model_dump_json() for e in events), "logs": caplog.text,
             "metrics": generate_latest(REGISTRY).decode()}
    for where, text in texts.items():
        assert NAME not in text.upper(), where
    for event in events:
        for instance in event.instances:
            assert NAME.encode() not in blobs.get(instance.blob).upper(), instance.source_format


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _jpeg_with_identifiers() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (64, 1))).save(buffer, format="JPEG")
    body = buffer.getvalue()
    assert body[2:4] == b"\xff\xe0"  # Pillow writes a plain JFIF APP0 first: replace it
    jfif_end = 4 + struct.unpack(">H", body[4:6])[0]
    name = NAME.encode()
    width = -(-len(name) // 3)
    thumbnail = name.ljust(width * 3, b" ")
    jfif = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01" + bytes([width, 1]) + thumbnail
    segments = [
        _segment(0xE0, jfif),  # JFIF header whose thumbnail spells the name
        _segment(0xE0, b"NOTJFIF " + name),  # an APP0 that is no JFIF at all
        _segment(0xE1, b"Exif\x00\x00" + name),
        _segment(0xE2, b"ICC_PROFILE\x00" + name),
        _segment(0xEE, b"Adobe" + name),  # an APP14 that is not the fixed Adobe layout
        _segment(0xFE, name),
    ]
    return b"\xff\xd8" + b"".join(segments) + body[jfif_end:]


def test_jpeg_keeps_only_a_plain_jfif_header() -> None:
    clean = strip_raster_metadata(_jpeg_with_identifiers())
    assert NAME.encode() not in clean
    assert clean[2:20] == b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"  # no thumbnail
    assert clean.count(b"\xff\xe0") == 1 and b"\xff\xe1" not in clean and b"\xff\xfe" not in clean
    assert np.asarray(Image.open(io.BytesIO(clean))).shape == (64, 64)  # pixels intact


def _png_with_identifiers() -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Author", NAME)
    info.add_text("Comment", NAME, zip=True)
    info.add_itxt("Title", NAME)
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32), 90, dtype=np.uint8)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_jpeg_frames_inside_dicom_lose_their_text_segments() -> None:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = synthetic_radiograph(rows=64, columns=64)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([_jpeg_with_identifiers()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    data = dicom_bytes(ds)
    assert NAME.encode() in data
    clean, _ = deidentify(read_dicom(data), Pseudonymizer("s"))
    out = encode_dicom(clean)
    assert NAME.encode() not in out.upper()
    from radalign.ingest.dicom import decode_dicom_pixels

    assert decode_dicom_pixels(read_dicom(out)).shape == (64, 64)  # still a decodable frame
