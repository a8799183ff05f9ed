from __future__ import annotations

import numpy as np
import pydicom
import pytest

from radalign.ingest.dicom import check_dicom, decode_dicom_pixels, header_not_chest_radiograph, read_dicom
from radalign.ingest.refusal import DICOM_STATUS, HTTP_STATUS, Refusal, RefusalReason
from radalign.samples import chest_cr_path
from radalign.testing.ingest import bad_dicom_corpus, dicom_bytes, synthetic_radiograph, with_changes


def _lung_and_mediastinum(image: np.ndarray) -> tuple[float, float]:
    """Mean of both lung fields and of the central strip, at mid height."""
    rows, cols = image.shape
    band = image[int(rows * 0.35) : int(rows * 0.55)]
    lungs = np.concatenate([band[:, int(cols * 0.22) : int(cols * 0.35)], band[:, int(cols * 0.65) : int(cols * 0.78)]], axis=1)
    mediastinum = band[:, int(cols * 0.46) : int(cols * 0.54)]
    return float(lungs.mean()), float(mediastinum.mean())


@pytest.mark.parametrize("name", ["RG1_UNCI.dcm", "RG1_J2KI.dcm"])
def test_real_chest_cr_is_accepted_and_decoded_with_monochrome1_inverted(name: str) -> None:
    path = chest_cr_path(name)
    if path is None:
        pytest.skip("pydicom-data is not installed")
    ds = read_dicom(path.read_bytes())
    facts = check_dicom(ds)
    assert (facts.modality, facts.view_position, facts.rows, facts.columns) == ("CR", "PA", 1955, 1841)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    image = decode_dicom_pixels(ds)
    assert image.dtype == np.float32 and image.shape == (1955, 1841)
    assert 0.0 <= image.min() and image.max() <= 1.0
    lungs, mediastinum = _lung_and_mediastinum(image)
    # After MONOCHROME1 inversion air is dark and the mediastinum bright, as on a film viewer.
    assert mediastinum > lungs + 0.2


def test_lossy_and_uncompressed_copies_decode_alike() -> None:
    unc, j2k = chest_cr_path("RG1_UNCI.dcm"), chest_cr_path("RG1_J2KI.dcm")
    if unc is None or j2k is None:
        pytest.skip("pydicom-data is not installed")
    a = decode_dicom_pixels(read_dicom(unc.read_bytes()))
    b = decode_dicom_pixels(read_dicom(j2k.read_bytes()))
    assert float(np.abs(a - b).mean()) < 0.02


@pytest.mark.parametrize("case", ["truncated", "random_bytes", "ct_modality", "ct_sop_class", "missing_pixel_data", "no_decoder"])
def test_bad_inputs_get_their_documented_refusal(case: str) -> None:
    data, reason = bad_dicom_corpus(synthetic_radiograph())[case]
    with pytest.raises(Refusal) as caught:
        check_dicom(read_dicom(data))
    assert caught.value.reason is reason
    assert caught.value.http_status == HTTP_STATUS[reason] and caught.value.dicom_status == DICOM_STATUS[reason]


def test_truncated_real_jpeg2000_object_is_refused() -> None:
    path = chest_cr_path("RG1_J2KI.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed")
    data = path.read_bytes()
    for cut in (2000, len(data) // 2, len(data) - 8):
        with pytest.raises(Refusal) as caught:
            check_dicom(read_dicom(data[:cut]))
        assert caught.value.reason is RefusalReason.UNREADABLE


def test_monochrome1_and_monochrome2_of_the_same_picture_decode_the_same() -> None:
    m2 = decode_dicom_pixels(read_dicom(dicom_bytes(synthetic_radiograph())))
    m1 = decode_dicom_pixels(read_dicom(dicom_bytes(synthetic_radiograph(photometric="MONOCHROME1"))))
    np.testing.assert_allclose(m1, m2, atol=1e-6)
    assert m2[:, 24].mean() > m2[:, 2].mean()  # the bright band stays bright


def test_rescale_and_window_are_applied() -> None:
    ds = synthetic_radiograph()
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000  # band 3500 -> 6000, background 500 -> 0
    ds.WindowCenter, ds.WindowWidth = 3000, 6000
    image = decode_dicom_pixels(read_dicom(dicom_bytes(ds)))
    assert image[:, 2].mean() == pytest.approx(0.0, abs=0.01)
    assert image[:, 24].mean() == pytest.approx(1.0, abs=0.01)
    # A narrow window around the background saturates the band and shows the background mid-grey.
    narrow = with_changes(ds, WindowCenter=0, WindowWidth=200)
    image = decode_dicom_pixels(read_dicom(dicom_bytes(narrow)))
    assert image[:, 24].mean() == pytest.approx(1.0, abs=0.01)
    assert 0.3 < image[:, 2].mean() < 0.7


def test_unreadable_pixel_stream_raises_decode_error() -> None:
    from radalign.ingest.dicom import PixelDecodeError

    ds = synthetic_radiograph()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 100])
    ds["PixelData"].VR = "OB"
    parsed = read_dicom(dicom_bytes(ds))
    check_dicom(parsed)  # structure is fine: the gateway cannot tell without decoding
    with pytest.raises(PixelDecodeError):
        decode_dicom_pixels(parsed)


@pytest.mark.parametrize(
    ("modality", "body_part", "flagged"),
    [
        ("CR", "CHEST", False), ("DX", "Thorax", False), ("DX", " chest pa ", False), ("CR", "PORT CHEST", False),
        ("DX", "CHEST_LAT", False), ("CR", "TORAX", False), ("DX", "LUNG", False), ("CR", "RIBS", False),
        ("DX", "CHESTABDOMEN", False), ("DR", "CHEST", False), ("CR", "", False), ("CR", None, False),
        ("SC", None, False), ("OT", "CHEST", False), ("", None, False),
        ("CR", "KNEE", True), ("DX", "SKULL", True), ("DX", "ABDOMEN", True), ("CR", "THORACICSPINE", True),
        ("DX", "HAND", True), ("SC", "PELVIS", True), ("MR", "CHEST", True), ("CT", None, True), ("US", "", True),
        ("MG", "BREAST", True),
    ],
)
def test_header_check_flags_what_the_header_says_is_not_a_chest_radiograph(modality, body_part, flagged) -> None:
    assert header_not_chest_radiograph(modality, body_part) is flagged


def test_the_gateway_facts_carry_the_header_check() -> None:
    chest = synthetic_radiograph()
    assert not check_dicom(chest).not_chest_radiograph
    assert check_dicom(with_changes(synthetic_radiograph(), BodyPartExamined="KNEE")).not_chest_radiograph
    assert not check_dicom(with_changes(synthetic_radiograph(), BodyPartExamined="CHEST")).not_chest_radiograph
