from __future__ import annotations

import io
import logging

import pytest
from prometheus_client import REGISTRY, generate_latest

from radalign.ingest.gateway import GatewayCore
from radalign.ingest.refusal import Refusal, RefusalReason
from radalign.samples import chest_cr_path, chest_jpeg_paths
from radalign.testing.ingest import bad_dicom_corpus, dicom_bytes, synthetic_radiograph
from schemas.events import Priority, StudyReceived


def _refused(reason: str, source: str) -> float:
    return REGISTRY.get_sample_value("radalign_gateway_instances_refused_total", {"source": source, "reason": reason}) or 0.0


async def test_real_cr_becomes_one_deidentified_study(settings, publisher, blobs, pseudonyms, caplog) -> None:
    path = chest_cr_path("RG1_J2KI.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed")
    caplog.set_level(logging.DEBUG)
    core = GatewayCore(settings, publisher, blobs, pseudonyms)
    data = path.read_bytes()
    first = await core.ingest_dicom(data, "dicom-cstore")
    again = await core.ingest_dicom(data, "dicom-cstore")  # a sender's retry
    assert not first.duplicate and again.duplicate and again.instance_key == first.instance_key
    [event] = await core.flush(force=True)
    assert isinstance(event, StudyReceived) and event.study.study_key == first.study_key
    assert event.modality == "CR" and event.source == "dicom-cstore" and len(event.instances) == 1
    assert event.instances[0].view_position == "PA" and event.instances[0].blob.media_type == "application/dicom"
    assert publisher.records[0][0] == "radalign.study.received.v1"
    # The mapping lives in the pseudonym store, and nowhere in the event, the logs or the metrics.
    row = pseudonyms.studies[first.study_key]
    assert row["patient_id"] == "9RG1" and row["published_version"] == 1
    import pydicom

    source = pydicom.dcmread(path)
    identifiers = [str(source.PatientName), source.PatientID, source.StudyInstanceUID, source.SOPInstanceUID,
                   source.SeriesInstanceUID, source.AccessionNumber, source.StudyDate, source.PatientBirthDate]
    texts = {"event": event.model_dump_json(), "logs": caplog.text, "metrics": generate_latest(REGISTRY).decode()}
    for where, text in texts.items():
        for value in identifiers:
            assert value not in text, f"{value!r} leaked into {where}"
    stored = blobs.get(event.instances[0].blob)
    for value in identifiers:
        assert value.encode() not in stored


async def test_stat_priority_comes_from_the_requested_procedure_priority(settings, publisher, blobs, pseudonyms) -> None:
    ds = synthetic_radiograph()
    ds.add_new((0x0040, 0x1003), "SH", "STAT")
    core = GatewayCore(settings, publisher, blobs, pseudonyms)
    await core.ingest_dicom(dicom_bytes(ds), "dicomweb-stow")
    [event] = await core.flush(force=True)
    assert event.study.priority is Priority.STAT
    assert publisher.records[0][0] == "radalign.study.received.v1.stat"


async def test_every_bad_input_is_refused_counted_and_publishes_nothing(settings, publisher, blobs, pseudonyms) -> None:
    core = GatewayCore(settings, publisher, blobs, pseudonyms)
    for name, (data, reason) in bad_dicom_corpus(synthetic_radiograph()).items():
        before = _refused(reason.value, "dicomweb-stow")
        with pytest.raises(Refusal) as caught:
            await core.ingest_dicom(data, "dicomweb-stow")
        assert caught.value.reason is reason, name
        assert _refused(reason.value, "dicomweb-stow") == before + 1
    assert await core.flush(force=True) == [] and pseudonyms.studies == {}
    # Still serving: a good object after the bad ones goes through.
    await core.ingest_dicom(dicom_bytes(synthetic_radiograph()), "dicomweb-stow")
    assert len(await core.flush(force=True)) == 1


async def test_size_limit_is_checked_before_parsing(settings, publisher, blobs, pseudonyms) -> None:
    small = settings.model_copy(update={"gateway_max_bytes": 1000})
    core = GatewayCore(small, publisher, blobs, pseudonyms)
    with pytest.raises(Refusal) as caught:
        await core.ingest_dicom(dicom_bytes(synthetic_radiograph()), "dicom-cstore")
    assert caught.value.reason is RefusalReason.TOO_LARGE


async def test_jpeg_over_http_is_cleaned_and_grouped_by_study_id(settings, publisher, blobs, pseudonyms) -> None:
    paths = chest_jpeg_paths()
    if len(paths) < 2:
        pytest.skip("pneumonia-model-package is not installed")
    core = GatewayCore(settings, publisher, blobs, pseudonyms)
    a = await core.ingest_image(paths[0].read_bytes(), study_id="ORDER-123", patient_id="MRN-42", view_position="pa", stat=True)
    b = await core.ingest_image(paths[1].read_bytes(), study_id="ORDER-123", patient_id="MRN-42")
    assert a.study_key == b.study_key and a.instance_key != b.instance_key
    [event] = await core.flush(force=True)
    assert event.modality == "OT" and event.source == "http" and event.study.priority is Priority.STAT
    assert [i.view_position for i in event.instances] == ["PA", None]
    assert all(i.source_format == "jpeg" and i.blob.media_type == "image/jpeg" for i in event.instances)
    assert "ORDER-123" not in event.model_dump_json() and "MRN-42" not in event.model_dump_json()
    assert pseudonyms.studies[a.study_key]["patient_id"] == "MRN-42"
    with pytest.raises(Refusal) as caught:
        await core.ingest_image(b"GIF89a....", study_id="ORDER-124")
    assert caught.value.reason is RefusalReason.UNSUPPORTED_MEDIA_TYPE
    with pytest.raises(Refusal) as caught:
        await core.ingest_image(paths[0].read_bytes(), study_id="", patient_id="x")
    assert caught.value.reason is RefusalReason.INVALID_METADATA


async def test_truncated_images_are_refused_at_the_door_without_decoding_pixels(settings, publisher, blobs, pseudonyms) -> None:
    import io

    import numpy as np
    from PIL import Image

    core = GatewayCore(settings, publisher, blobs, pseudonyms)
    for fmt in ("JPEG", "PNG"):
        buffer = io.BytesIO()
        Image.fromarray((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)).save(buffer, format=fmt)
        data = buffer.getvalue()
        with pytest.raises(Refusal) as caught:
            await core.ingest_image(data[: len(data) * 2 // 3], study_id=f"TRUNC-{fmt}", patient_id="P")
        assert caught.value.reason is RefusalReason.UNREADABLE, fmt
        accepted = await core.ingest_image(data, study_id=f"OK-{fmt}", patient_id="P")
        assert not accepted.duplicate
    assert {e.study.study_key for e in await core.flush(force=True)} == {
        core.pseudonymizer.study_key("http|OK-JPEG"), core.pseudonymizer.study_key("http|OK-PNG")
    }, "only the complete images became studies"


async def test_each_study_carries_the_site_configured_for_its_source(settings, publisher, blobs, pseudonyms) -> None:
    configured = settings.model_copy(update={"patient_issuers": "dicom-cstore:PACS_A=hosp a,http=HOSP-H"})
    core = GatewayCore(configured, publisher, blobs, pseudonyms)
    await core.ingest_dicom(dicom_bytes(synthetic_radiograph()), "dicom-cstore", calling_ae="PACS_A")
    await core.ingest_dicom(dicom_bytes(synthetic_radiograph()), "dicom-cstore", calling_ae="PACS_B")
    declared = synthetic_radiograph()
    declared.IssuerOfPatientID = "HOSP-X"  # a patient namespace the object declares: no site from it
    await core.ingest_dicom(dicom_bytes(declared), "dicomweb-stow")
    events = await core.flush(force=True)
    assert sorted(str(e.site) for e in events) == ["HOSP-A", "None", "None"]
    paths = chest_jpeg_paths()
    if not paths:
        pytest.skip("pneumonia-model-package is not installed")
    await core.ingest_image(paths[0].read_bytes(), study_id="ORDER-7", patient_id="MRN-7")
    [http] = await core.flush(force=True)
    assert http.site == "HOSP-H"


async def test_a_knee_film_is_accepted_and_flagged_not_chest_by_its_header(settings, publisher, blobs, pseudonyms) -> None:
    core = GatewayCore(settings, publisher, blobs, pseudonyms)
    uid = "1.2.826.0.1.3680043.8.498.991"
    knee = synthetic_radiograph(study_uid=uid)
    knee.BodyPartExamined = "KNEE"
    chest = synthetic_radiograph(study_uid=uid, view="AP")
    chest.BodyPartExamined = "CHEST"
    await core.ingest_dicom(dicom_bytes(knee), "dicom-cstore")
    await core.ingest_dicom(dicom_bytes(chest), "dicom-cstore")
    [event] = await core.flush(force=True)
    assert [i.not_chest_radiograph for i in event.instances] == [True, False]
    # De-identification drops BodyPartExamined values outside its closed set: the flag is the only trace.
    import pydicom

    assert "BodyPartExamined" not in pydicom.dcmread(io.BytesIO(blobs.get(event.instances[0].blob)))


# --- accepted and ignored: objects a PACS keeps beside the images ---------------------------------

def _ignored(source: str, kind: str) -> float:
    return REGISTRY.get_sample_value("radalign_gateway_ignored_instances_total", {"source": source, "sop_class": kind}) or 0.0


def test_ignored_classes_map_to_the_closed_label_set() -> None:
    from pydicom.uid import UID

    from radalign.ingest.dicom import ACCEPTED_SOP_CLASSES, IGNORED_KINDS, IGNORED_SOP_CLASSES

    assert set(IGNORED_SOP_CLASSES.values()) == set(IGNORED_KINDS)
    assert not set(IGNORED_SOP_CLASSES) & set(ACCEPTED_SOP_CLASSES)
    for sop_class, kind in IGNORED_SOP_CLASSES.items():
        name = UID(sop_class).name
        assert name.endswith("Storage"), name  # every UID is a real storage class
        assert kind != "sr" or " SR " in f" {name} " or name == "Procedure Log Storage", name
        assert kind != "presentation_state" or "Presentation State" in name, name
    names = {UID(u).name for u in IGNORED_SOP_CLASSES}
    for wanted in ("Basic Text SR Storage", "Enhanced SR Storage", "Comprehensive SR Storage", "Comprehensive 3D SR Storage",
                   "Key Object Selection Document Storage", "Grayscale Softcopy Presentation State Storage"):
        assert wanted in names


@pytest.mark.parametrize(
    ("sop_class", "kind"),
    [
        ("1.2.840.10008.5.1.4.1.1.88.11", "sr"), ("1.2.840.10008.5.1.4.1.1.88.22", "sr"),
        ("1.2.840.10008.5.1.4.1.1.88.33", "sr"), ("1.2.840.10008.5.1.4.1.1.88.34", "sr"),
        ("1.2.840.10008.5.1.4.1.1.88.59", "kos"), ("1.2.840.10008.5.1.4.1.1.11.1", "presentation_state"),
        ("1.2.840.10008.5.1.4.1.1.104.1", "other"),
    ],
)
async def test_an_sr_kos_or_presentation_state_is_answered_success_dropped_and_counted(
    settings, publisher, blobs, pseudonyms, caplog, sop_class: str, kind: str
) -> None:
    from radalign.ingest.gateway import Ignored
    from radalign.testing.ingest import synthetic_non_image

    caplog.set_level(logging.DEBUG)
    core = GatewayCore(settings, publisher, blobs, pseudonyms)
    image = synthetic_radiograph()
    other = synthetic_non_image(sop_class, study_uid=image.StudyInstanceUID)
    before = _ignored("dicomweb-stow", kind)
    accepted = await core.ingest_dicom(dicom_bytes(image), "dicomweb-stow")
    ignored = await core.ingest_dicom(dicom_bytes(other), "dicomweb-stow")
    assert isinstance(ignored, Ignored) and ignored.kind == kind
    assert (ignored.sop_class_uid, ignored.sop_instance_uid) == (sop_class, other.SOPInstanceUID)  # for the STOW-RS answer
    assert _ignored("dicomweb-stow", kind) == before + 1
    [event] = await core.flush(force=True)  # the study holds the image only
    assert event.study.study_key == accepted.study_key and len(event.instances) == 1
    assert list(pseudonyms.studies) == [accepted.study_key]
    assert other.SOPInstanceUID not in caplog.text and other.PatientID not in caplog.text


async def test_a_broken_sr_is_still_refused(settings, publisher, blobs, pseudonyms) -> None:
    from radalign.testing.ingest import synthetic_non_image

    core = GatewayCore(settings, publisher, blobs, pseudonyms)
    data = dicom_bytes(synthetic_non_image())
    # Unreadable: cut inside the file meta, or a DICOM preamble followed by garbage.
    for broken in (data[:300], data[:132] + b"\x08\x00" + bytes(range(256)) * 4):
        with pytest.raises(Refusal) as unreadable:
            await core.ingest_dicom(broken, "dicom-cstore")
        assert unreadable.value.reason is RefusalReason.UNREADABLE
    no_uid = synthetic_non_image()
    del no_uid.SOPInstanceUID
    with pytest.raises(Refusal) as missing:
        await core.ingest_dicom(dicom_bytes(no_uid), "dicom-cstore")
    assert missing.value.reason is RefusalReason.MISSING_IDENTIFIER
    # A CT is still refused: only the listed non-image classes are ignored.
    corpus = bad_dicom_corpus(synthetic_radiograph())
    with pytest.raises(Refusal) as ct:
        await core.ingest_dicom(corpus["ct_sop_class"][0], "dicom-cstore")
    assert ct.value.reason is RefusalReason.UNSUPPORTED_SOP_CLASS
    assert await core.flush(force=True) == []
