"""The corrections manifest is what `radalign train` reads, with the signed labels and the model input."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from review_helpers import drafted

from radalign.blobstore import LocalBlobStore
from radalign.concepts_training.data import read_manifest
from radalign.ingest.images import encode_npy
from radalign.review.agreement import drafted_states
from radalign.review.manifest import write_manifest
from radalign.review.signoff import build_final
from radalign.review.store import SignedRow
from schemas.events import Certainty, Observation, ReviewRole


def _row(draft, labels, blobs, version=1, image=True, when=datetime(2026, 11, 30, 13, tzinfo=UTC)):
    final = build_final(draft, findings="Edited findings.", impression="Edited impression.", signer_key="rd-0123456789abcdef",
                        signer_role=ReviewRole.RADIOLOGIST, version=version, labels=labels, signed_at=when)
    film = np.linspace(0, 1, 224 * 224, dtype=np.float32).reshape(1, 224, 224)
    ref = blobs.put(encode_npy(film), "application/x-npy") if image else None
    return SignedRow(final, drafted_states(draft), when, ref)


def test_manifest_keeps_the_corrected_studies_with_signed_labels(tmp_path: Path):
    blobs = LocalBlobStore(tmp_path / "blobs")
    corrected = drafted("st-corrected00001")  # draft: effusion absent, cardiomegaly present
    agreeing = drafted("st-agreeing000001")
    rows = [
        _row(corrected, {Observation.PLEURAL_EFFUSION: Certainty.ABSENT}, blobs, version=1),
        # the amendment (version 2) is the one that counts
        _row(corrected, {Observation.PLEURAL_EFFUSION: Certainty.PRESENT, Observation.CARDIOMEGALY: Certainty.PRESENT}, blobs, version=2,
             when=datetime(2026, 11, 30, 14, tzinfo=UTC)),
        _row(agreeing, {Observation.CARDIOMEGALY: Certainty.PRESENT}, blobs),
    ]
    out = tmp_path / "out" / "corrections.csv"
    summary = write_manifest(rows, out, blobs.get)
    assert (summary.signed, summary.written, summary.agreeing) == (2, 1, 1)
    [record] = read_manifest(out)
    labels = dict(zip(Observation, record.labels, strict=True))
    assert labels[Observation.PLEURAL_EFFUSION] == 1.0 and labels[Observation.CARDIOMEGALY] == 1.0
    assert np.isnan(labels[Observation.EDEMA])  # not mentioned in the signed text: unknown, not negative
    assert record.patient_id == corrected.study.patient_key and record.image.is_file()
    assert "Pleural Effusion: absent -> present" in out.read_text()
    everything = write_manifest(rows, tmp_path / "all.csv", blobs.get, only_differences=False)
    assert everything.written == 2
