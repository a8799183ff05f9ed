from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from radalign.ingest.gateway import GatewayCore
from radalign.ingest.images import decode_npy
from radalign.preprocess.core import PreprocessError, preprocess
from radalign.samples import chest_cr_path, chest_jpeg_paths
from radalign.testing.ingest import dicom_bytes, synthetic_radiograph
from schemas.events import BlobRef, StudyReceived


async def _study(settings, publisher, blobs, pseudonyms, *objects: bytes) -> StudyReceived:
    core = GatewayCore(settings, publisher, blobs, pseudonyms)
    for data in objects:
        await core.ingest_dicom(data, "dicom-cstore")
    [event] = await core.flush(force=True)
    return event


def _input(blobs, result) -> np.ndarray:
    assert result.model_input.media_type == "application/x-npy"
    array = decode_npy(blobs.get(result.model_input))
    assert array.dtype == np.float32 and array.shape == (1, 224, 224) and list(array.shape) == result.input_shape
    assert 0.0 <= array.min() and array.max() <= 1.0
    return array[0]


async def test_real_monochrome1_cr_gives_an_inverted_model_input(settings, publisher, blobs, pseudonyms) -> None:
    path = chest_cr_path("RG1_J2KI.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed")
    event = await _study(settings, publisher, blobs, pseudonyms, path.read_bytes())
    result = preprocess(event, blobs)
    assert (result.original_rows, result.original_columns) == (1955, 1841)
    assert result.view_position == "PA" and result.view_fallback is None and not result.lateral_only
    image = _input(blobs, result)
    # 1955x1841 -> 224x211: 6-7 columns of zero padding each side, none top/bottom.
    assert image[:, :5].max() == 0.0 and image[:, -5:].max() == 0.0 and image[0, 112] > 0
    band = image[80:120]
    lungs = np.concatenate([band[:, 55:75], band[:, 150:170]], axis=1).mean()
    mediastinum = band[:, 104:120].mean()
    assert mediastinum > lungs + 0.2, (mediastinum, lungs)
    assert {t.stage for t in result.timings} == {"select+fetch", "decode", "resize+store"}
    # Idempotent: the same study gives the same blob.
    assert preprocess(event, blobs).model_input == result.model_input


async def test_pa_is_preferred_over_ap_and_lateral(settings, publisher, blobs, pseudonyms) -> None:
    uid = "1.2.826.0.1.3680043.8.498.777"
    lat, ap, pa = (synthetic_radiograph(view=v, study_uid=uid) for v in ("LL", "AP", "PA"))
    event = await _study(settings, publisher, blobs, pseudonyms, *(dicom_bytes(d) for d in (lat, ap, pa)))
    result = preprocess(event, blobs)
    assert result.view_position == "PA" and result.instance_key == event.instances[2].instance_key
    event_no_pa = event.model_copy(update={"instances": event.instances[:2]})
    assert preprocess(event_no_pa, blobs).view_position == "AP"


async def test_fallbacks_when_view_position_is_missing(settings, publisher, blobs, pseudonyms) -> None:
    uid = "1.2.826.0.1.3680043.8.498.778"
    lateral_by_text = synthetic_radiograph(view=None, study_uid=uid)
    lateral_by_text.SeriesDescription = "Thorax lateral"
    unknown = synthetic_radiograph(view=None, study_uid=uid)
    ap_by_text = synthetic_radiograph(view=None, study_uid=uid)
    ap_by_text.ProtocolName = "Chest AP portable"
    event = await _study(settings, publisher, blobs, pseudonyms, *(dicom_bytes(d) for d in (lateral_by_text, unknown, ap_by_text)))
    result = preprocess(event, blobs)
    assert result.instance_key == event.instances[2].instance_key and "AP named" in result.view_fallback
    two = event.model_copy(update={"instances": event.instances[:2]})
    result = preprocess(two, blobs)
    assert result.instance_key == event.instances[1].instance_key and "first instance" in result.view_fallback


async def test_lateral_only_study_is_processed_and_flagged(settings, publisher, blobs, pseudonyms) -> None:
    event = await _study(settings, publisher, blobs, pseudonyms, dicom_bytes(synthetic_radiograph(view="LL")))
    result = preprocess(event, blobs)
    assert result.lateral_only and result.view_position == "LL"
    _input(blobs, result)


async def test_http_jpeg_gives_a_model_input(settings, publisher, blobs, pseudonyms) -> None:
    paths = chest_jpeg_paths()
    if not paths:
        pytest.skip("pneumonia-model-package is not installed")
    core = GatewayCore(settings, publisher, blobs, pseudonyms)
    await core.ingest_image(paths[0].read_bytes(), study_id="S-1", patient_id="P-1", view_position="AP")
    [event] = await core.flush(force=True)
    result = preprocess(event, blobs)
    image = _input(blobs, result)
    assert result.view_position == "AP" and image.std() > 0.05
    assert (result.original_rows, result.original_columns) == (event.instances[0].rows, event.instances[0].columns)


async def test_failures_are_typed(settings, publisher, blobs, pseudonyms) -> None:
    event = await _study(settings, publisher, blobs, pseudonyms, dicom_bytes(synthetic_radiograph()))
    bogus = BlobRef(uri=event.instances[0].blob.uri, sha256="0" * 64, size=event.instances[0].blob.size, media_type="application/dicom")
    tampered = event.model_copy(update={"instances": [event.instances[0].model_copy(update={"blob": bogus})]})
    with pytest.raises(PreprocessError) as caught:
        preprocess(tampered, blobs)  # a digest that does not match the path: a crafted reference
    assert caught.value.error_type == "validation" and "claim check refused" in caught.value.reason
    path = Path(event.instances[0].blob.uri.removeprefix("file://"))
    original = path.read_bytes()
    path.write_bytes(b"\x00" * len(original))
    with pytest.raises(PreprocessError) as caught:
        preprocess(event, blobs)
    assert caught.value.error_type == "validation" and "checksum" in caught.value.reason
    path.unlink()
    with pytest.raises(PreprocessError) as caught:
        preprocess(event, blobs)  # missing is the store's problem, and replayable
    assert caught.value.error_type == "dependency" and "missing" in caught.value.reason
    path.write_bytes(original)
    broken = blobs.put(b"\x00" * 300, "application/dicom")
    undecodable = event.model_copy(update={"instances": [event.instances[0].model_copy(update={"blob": broken})]})
    with pytest.raises(PreprocessError) as caught:
        preprocess(undecodable, blobs)
    assert caught.value.error_type == "decode" and "unreadable" in caught.value.reason


async def test_a_study_whose_headers_say_not_chest_is_flagged_and_keeps_its_site(settings, publisher, blobs, pseudonyms) -> None:
    knee = synthetic_radiograph(view="AP")
    knee.BodyPartExamined = "KNEE"
    configured = settings.model_copy(update={"patient_issuers": "dicom-cstore=HOSP-A"})
    core = GatewayCore(configured, publisher, blobs, pseudonyms)
    await core.ingest_dicom(dicom_bytes(knee), "dicom-cstore")
    [event] = await core.flush(force=True)
    result = preprocess(event, blobs)
    assert result.not_chest_radiograph and not result.lateral_only and "not a chest radiograph" in str(result.view_fallback)
    assert result.site == "HOSP-A" == event.site
    _input(blobs, result)  # still decoded: the review page shows the image


async def test_a_chest_film_beside_a_knee_film_is_the_one_chosen(settings, publisher, blobs, pseudonyms) -> None:
    uid = "1.2.826.0.1.3680043.8.498.779"
    knee_pa = synthetic_radiograph(view="PA", study_uid=uid)
    knee_pa.BodyPartExamined = "KNEE"
    chest_ap = synthetic_radiograph(view="AP", study_uid=uid)
    event = await _study(settings, publisher, blobs, pseudonyms, *(dicom_bytes(d) for d in (knee_pa, chest_ap)))
    result = preprocess(event, blobs)
    assert result.instance_key == event.instances[1].instance_key and result.view_position == "AP"
    assert not result.not_chest_radiograph and result.site is None


async def test_a_childs_film_is_flagged_from_its_header_and_the_age_never_travels(settings, publisher, blobs, pseudonyms) -> None:
    import pydicom

    child, adult = synthetic_radiograph(view="PA"), synthetic_radiograph(view="PA")
    child.PatientAge, adult.PatientAge = "007Y", "045Y"
    core = GatewayCore(settings, publisher, blobs, pseudonyms)
    flags = []
    for ds in (child, adult):
        await core.ingest_dicom(dicom_bytes(ds), "dicom-cstore")
        [event] = await core.flush(force=True)
        result = preprocess(event, blobs)
        flags.append((event.instances[0].child, result.child))
        assert "PatientAge" not in pydicom.dcmread(io.BytesIO(blobs.get(event.instances[0].blob)))  # de-identified: the flag is the only trace
    assert flags == [(True, True), (False, False)]
