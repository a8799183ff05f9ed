from __future__ import annotations

import asyncio
import logging
import time

import pytest
from prometheus_client import REGISTRY
from pynetdicom import AE
from pynetdicom.sop_class import ComputedRadiographyImageStorage, CTImageStorage, DigitalXRayImageStorageForPresentation, Verification

from radalign.ingest.gateway import GatewayCore
from radalign.ingest.refusal import DICOM_STATUS, RefusalReason
from radalign.samples import chest_cr_path
from radalign.testing.ingest import synthetic_radiograph, with_changes
from services.gateway.dicom_scp import DicomScp


def _scu(port: int, calling: str = "MODALITY1", contexts=(ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation)):
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for ctx in contexts:
        # One context per transfer syntax: an SCP accepts a single syntax per context.
        for syntax in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.91"):
            ae.add_requested_context(ctx, syntax)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title="RADALIGN")


@pytest.fixture
async def scp(settings, publisher, blobs, pseudonyms):
    core = GatewayCore(settings, publisher, blobs, pseudonyms)
    server = DicomScp(settings.model_copy(update={"dicom_allowed_aes": "MODALITY1,MODALITY2"}), core, asyncio.get_running_loop())
    server.start(port=0)
    yield server
    await asyncio.to_thread(server.stop)


async def test_echo_and_store_a_real_cr_and_refuse_a_ct(scp, publisher, caplog) -> None:
    path = chest_cr_path("RG1_J2KI.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed")
    import pydicom

    real = pydicom.dcmread(path)
    caplog.set_level(logging.DEBUG)
    fake_ct = with_changes(synthetic_radiograph(), Modality="CT")

    def exchange() -> tuple[int, int, int]:
        assoc = _scu(scp.port)
        assert assoc.is_established
        try:
            echo = assoc.send_c_echo().Status
            stored = assoc.send_c_store(real).Status
            refused = assoc.send_c_store(fake_ct).Status
        finally:
            assoc.release()
        return echo, stored, refused

    echo, stored, refused = await asyncio.to_thread(exchange)
    assert echo == 0x0000 and stored == 0x0000
    assert refused == DICOM_STATUS[RefusalReason.UNSUPPORTED_MODALITY] == 0xA900
    [event] = await scp.core.flush(force=True)
    assert event.source == "dicom-cstore" and event.modality == "CR" and len(event.instances) == 1
    for value in (real.SOPInstanceUID, real.StudyInstanceUID, real.PatientID, str(real.PatientName)):
        assert value not in caplog.text


async def test_unknown_calling_ae_and_ct_sop_class_are_rejected_at_association(scp) -> None:
    def attempt() -> tuple[bool, bool]:
        stranger = _scu(scp.port, calling="STRANGER")
        rejected = stranger.is_rejected
        ct = _scu(scp.port, contexts=(CTImageStorage,))
        accepted_ct = any(c.abstract_syntax == CTImageStorage for c in ct.accepted_contexts)
        ct.release()
        return rejected, accepted_ct

    rejected, accepted_ct = await asyncio.to_thread(attempt)
    assert rejected and not accepted_ct


async def test_oversize_store_is_aborted_while_it_arrives(settings, publisher, blobs, pseudonyms) -> None:
    """A data set over gateway_max_bytes ends in an A-ABORT before it is complete (the SCP never
    buffers it whole); a normal store on a new association still succeeds."""
    small = settings.model_copy(update={"gateway_max_bytes": 256 * 1024})
    core = GatewayCore(small, publisher, blobs, pseudonyms)
    server = DicomScp(small, core, asyncio.get_running_loop())
    server.start(port=0)
    try:
        big = synthetic_radiograph(rows=1024, columns=1024)  # 2 MiB of pixels

        def send_big() -> tuple[bool, object]:
            assoc = _scu(server.port)
            assert assoc.is_established
            status = assoc.send_c_store(big)
            for _ in range(50):  # the A-ABORT reaches the SCU's state machine shortly after
                if not assoc.is_established:
                    break
                time.sleep(0.1)
            return not assoc.is_established, status

        before = REGISTRY.get_sample_value("radalign_gateway_instances_refused_total", {"source": "dicom-cstore", "reason": "too_large"}) or 0
        closed, status = await asyncio.to_thread(send_big)
        after = REGISTRY.get_sample_value("radalign_gateway_instances_refused_total", {"source": "dicom-cstore", "reason": "too_large"})
        assert after == before + 1
        assert closed and not status  # no C-STORE response: the association was aborted mid-transfer
        assert await core.flush(force=True) == []

        def send_small() -> int:
            assoc = _scu(server.port)
            try:
                return assoc.send_c_store(synthetic_radiograph()).Status
            finally:
                assoc.release()

        assert await asyncio.to_thread(send_small) == 0x0000
    finally:
        await asyncio.to_thread(server.stop)


async def test_sr_kos_and_presentation_states_are_accepted_with_success_and_dropped(scp) -> None:
    """A PACS routing a whole study (images, our SR, a KOS, a GSPS) is not failed on the objects the
    pipeline does not process: their contexts are accepted, each C-STORE answers 0x0000, only the
    image makes a study, and the others are counted by kind."""
    from pynetdicom.sop_class import (
        ComprehensiveSRStorage,
        GrayscaleSoftcopyPresentationStateStorage,
        KeyObjectSelectionDocumentStorage,
    )

    from radalign.testing.ingest import synthetic_non_image

    image = synthetic_radiograph()
    others = {kind: synthetic_non_image(str(sop_class), study_uid=image.StudyInstanceUID) for kind, sop_class in (
        ("sr", ComprehensiveSRStorage), ("kos", KeyObjectSelectionDocumentStorage),
        ("presentation_state", GrayscaleSoftcopyPresentationStateStorage),
    )}

    def counted(kind: str) -> float:
        labels = {"source": "dicom-cstore", "sop_class": kind}
        return REGISTRY.get_sample_value("radalign_gateway_ignored_instances_total", labels) or 0.0

    before = {kind: counted(kind) for kind in others}

    def exchange() -> list[int]:
        contexts = (DigitalXRayImageStorageForPresentation, ComprehensiveSRStorage, KeyObjectSelectionDocumentStorage,
                    GrayscaleSoftcopyPresentationStateStorage, CTImageStorage)
        assoc = _scu(scp.port, contexts=contexts)
        assert assoc.is_established
        accepted = {c.abstract_syntax for c in assoc.accepted_contexts}
        assert CTImageStorage not in accepted and ComprehensiveSRStorage in accepted
        try:
            return [assoc.send_c_store(ds).Status for ds in (image, *others.values())]
        finally:
            assoc.release()

    assert await asyncio.to_thread(exchange) == [0x0000] * 4
    assert {kind: counted(kind) - before[kind] for kind in others} == {kind: 1.0 for kind in others}
    [event] = await scp.core.flush(force=True)
    assert len(event.instances) == 1 and event.modality == "DX"


async def test_the_shared_c_store_sender_stores_a_study_and_names_a_refused_association(scp) -> None:
    """`radalign.samples.send_c_store`: what the demo and the tests send studies with."""
    from radalign.samples import send_c_store

    study = [synthetic_radiograph(), synthetic_radiograph()]
    statuses = await asyncio.to_thread(send_c_store, "127.0.0.1", scp.port, study, calling_ae="MODALITY1", called_ae="RADALIGN")
    assert statuses == [0x0000, 0x0000]
    with pytest.raises(ConnectionError, match="no association"):
        await asyncio.to_thread(send_c_store, "127.0.0.1", scp.port, study, calling_ae="STRANGER", called_ae="RADALIGN")
