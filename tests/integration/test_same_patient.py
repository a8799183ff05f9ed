"""Same-patient exclusion on the real stack, over C-STORE, STOW-RS and the HTTP form.

A provider loads a patient's prior reports with `kb ingest` under its issuer; the same patient's
new study then arrives through each intake protocol (the issuer coming from the calling AE's
configuration, from IssuerOfPatientID, and from the HTTP form's `issuer` field). None of the
patient's own cases may be retrieved. To make the check able to fail, the prior cases are made
the best possible match for the image (their embeddings are the study image's own, their labels
the concepts predicted for it), and the same image sent as another patient must retrieve them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from aiokafka import AIOKafkaConsumer

from radalign.config import Settings
from radalign.framework import codec
from radalign.pseudonymizer import Pseudonymizer
from radalign.samples import as_new_study, chest_cr_path, chest_jpeg_files
from radalign.testing.ingest import dicom_bytes, send_cstore
from radalign.testing.stack import IU_CASES_FOR_TESTS, running_workers
from schemas.events import CasesRetrieved, Certainty, ConceptsInferred
from schemas.topics import CASES_RETRIEVED, CONCEPTS_INFERRED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SOURCE = "it-same-patient"
ISSUER = "HOSP-A"
OWN_CASES_PER_IMAGE = 6  # more than retrieval_k: without exclusion the top 5 could all be own cases
TIMEOUT_S = 240.0


@pytest.fixture(scope="module")
def stack(embedded_triton: Settings) -> Iterator[Settings]:
    from radalign.kb.ingest import ensure_iu_cases

    if chest_cr_path("RG1_UNCI.dcm") is None or not chest_jpeg_files():
        pytest.skip("pydicom-data and pneumonia-model-package are needed")
    # C-STORE from PACS_A carries no issuer: the gateway's per-sender configuration names it.
    # A positive embedding weight makes the planted priors (the image's own embedding) the unique best
    # match, so the controls below can show that exclusion is what keeps them out.
    settings = embedded_triton.model_copy(
        update={"patient_issuers": f"dicom-cstore:PACS_A={ISSUER}", "gateway_tokens": "", "retrieval_embedding_weight": 0.3}
    )
    asyncio.run(ensure_iu_cases(settings, limit=IU_CASES_FOR_TESTS))  # other patients' cases to retrieve instead
    try:
        with running_workers(settings):
            yield settings
    finally:
        asyncio.run(_delete_cases(settings))


async def _delete_cases(settings: Settings) -> None:
    from radalign.db import open_pool

    pool = await open_pool(settings, max_size=1)
    try:
        async with pool.connection() as conn:
            await conn.execute("DELETE FROM cases WHERE source = %s", (SOURCE,))
    finally:
        await pool.close()


def _cr(patient_id: str, issuer: str | None = None) -> pydicom.Dataset:
    (ds,) = as_new_study([chest_cr_path("RG1_UNCI.dcm")])
    ds.PatientID = patient_id
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    elif "IssuerOfPatientID" in ds:
        del ds.IssuerOfPatientID
    return ds


def _study_key(settings: Settings, ds: pydicom.Dataset) -> str:
    return Pseudonymizer(settings.deid_secret).study_key(str(ds.StudyInstanceUID))


def cstore_study(settings: Settings, ds: pydicom.Dataset, calling_ae: str) -> str:
    assert send_cstore(settings.dicom_port, ds, calling_ae=calling_ae, called_ae=settings.dicom_ae_title) == 0
    return _study_key(settings, ds)


def send_stow(settings: Settings, ds: pydicom.Dataset) -> str:
    boundary = "it-same-patient"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode() + dicom_bytes(ds) + f"\r\n--{boundary}--\r\n".encode()
    r = httpx.post(
        f"http://127.0.0.1:{settings.gateway_port}/dicomweb/studies", content=body, timeout=30,
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
    )
    assert r.status_code == 200, r.text
    return _study_key(settings, ds)


def send_http(settings: Settings, path: Path, study_id: str, patient_id: str, issuer: str | None = None) -> str:
    data = {"study_id": study_id, "patient_id": patient_id, "view_position": "PA"}
    if issuer is not None:
        data["issuer"] = issuer
    r = httpx.post(
        f"http://127.0.0.1:{settings.gateway_port}/v1/studies", data=data,
        files={"file": (path.name, path.read_bytes(), "image/jpeg")}, timeout=30,
    )
    assert r.status_code == 202, r.text
    return r.json()["study_key"]


async def read_events(settings: Settings, topic: str, model, keys: set[str]) -> dict:
    """The first event of each study key in `keys` on `topic` (both lanes), from the beginning."""
    consumer = AIOKafkaConsumer(
        topic, f"{topic}.stat", bootstrap_servers=settings.kafka_bootstrap, group_id=None,
        auto_offset_reset="earliest", enable_auto_commit=False,
    )
    await consumer.start()
    found: dict = {}
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and not keys <= set(found):
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for msg in messages:
                    event = codec.decode(model, msg.value)
                    found.setdefault(event.study.study_key, event)
    finally:
        await consumer.stop()
    missing = keys - set(found)
    assert not missing, f"no {topic} event for {len(missing)} studies within {TIMEOUT_S:.0f} s"
    return {k: found[k] for k in keys}


async def store_prior_cases(settings: Settings, probes: dict[str, ConceptsInferred], tmp_path: Path) -> tuple[str, set[str]]:
    """The patient's prior reports, loaded the way a provider does (csv_drafts with its issuer),
    each with the probe image's own embedding and labels equal to the concepts predicted for it."""
    from radalign.kb.case import CaseRecord
    from radalign.kb.ingest import csv_drafts
    from radalign.kb.store import CaseStore

    rows = ["case_id,patient_id,findings,impression"]
    for image in probes:
        rows += [f"{image}-{i},MRN-SELF,Prior study {image} number {i} of this patient.,Prior impression {i}." for i in range(OWN_CASES_PER_IMAGE)]
    path = tmp_path / "priors.csv"
    path.write_text("\n".join(rows) + "\n")
    drafts = csv_drafts(path, SOURCE, settings.deid_secret, lambda f, i: {}, issuer=ISSUER)
    records = []
    for draft in drafts:
        probe = probes[draft.findings.split()[2]]
        labels = {c.observation: c.state for c in probe.concepts if c.state in (Certainty.PRESENT, Certainty.ABSENT)}
        vector = np.asarray(probe.image_embedding, dtype=np.float32)
        draft = dataclasses.replace(draft, labels=labels)
        records.append(CaseRecord.from_draft(draft, vector, draft.content_hash("probe"), vector))
    async with await CaseStore.open(settings) as store:
        await store.upsert_many(records)
    keys = {d.patient_key for d in drafts}
    assert len(keys) == 1
    return keys.pop(), {d.case_key for d in drafts}


def test_own_prior_cases_are_never_retrieved_over_cstore_stow_and_http(stack: Settings, tmp_path: Path) -> None:
    settings = stack
    jpeg = chest_jpeg_files()[0]
    # 1. Probes (a patient with no priors) give the embedding and concepts of each image as served.
    probe_keys = {"cr": send_stow(settings, _cr("PROBE-1")), "jpeg": send_http(settings, jpeg, "IT-SP-PROBE", "PROBE-1")}
    concepts = asyncio.run(read_events(settings, CONCEPTS_INFERRED.name, ConceptsInferred, set(probe_keys.values())))
    probes = {image: concepts[key] for image, key in probe_keys.items()}
    for image, probe in probes.items():
        assert probe.ood is None, f"the {image} chest radiograph was refused as out of distribution"
    own_patient, own_cases = asyncio.run(store_prior_cases(settings, probes, tmp_path))

    # 2. The patient's new studies: the issuer from the AE's configuration, IssuerOfPatientID, the form.
    targets = {
        "dicom-cstore": cstore_study(settings, _cr("MRN-SELF"), calling_ae="PACS_A"),
        "dicomweb-stow": send_stow(settings, _cr("MRN-SELF", issuer="hosp-a")),
        "http": send_http(settings, jpeg, "IT-SP-ORDER-1", "MRN-SELF", issuer=" Hosp-A "),
    }
    # Controls: the same images from another patient of the same hospital retrieve the priors.
    controls = {
        "dicomweb-stow": send_stow(settings, _cr("MRN-OTHER", issuer=ISSUER)),
        "http": send_http(settings, jpeg, "IT-SP-ORDER-2", "MRN-OTHER", issuer=ISSUER),
    }
    retrieved = asyncio.run(
        read_events(settings, CASES_RETRIEVED.name, CasesRetrieved, set(targets.values()) | set(controls.values()))
    )
    for protocol, key in controls.items():
        hits = [c.case_key for c in retrieved[key].cases if c.case_key in own_cases]
        assert hits, f"control over {protocol}: the priors are not the best match, the exclusion test would prove nothing"
    own_retrievals = {}
    for protocol, key in targets.items():
        event = retrieved[key]
        assert event.study.patient_key == own_patient, f"{protocol}: the gateway's patient key differs from kb ingest's"
        assert event.cases, f"{protocol}: retrieval returned nothing"
        own_retrievals[protocol] = sum(c.case_key in own_cases for c in event.cases)
    assert own_retrievals == {p: 0 for p in targets}, own_retrievals
