"""Claim checks are not trusted: a crafted reference never reads another file (issue 12)."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from radalign.blobstore import BlobIntegrityError, BlobNotFound, BlobRefused, LocalBlobStore
from radalign.config import Settings
from radalign.framework import codec
from radalign.framework.stage import Record, StageRunner
from schemas.events import BlobRef, DeadLetter, Instance, StudyReceived, StudyRef
from services.preprocess.agent import PreprocessStage

SECRET = b"root:x:0:0:secret-host-file\n" * 7


def _ref(uri: str, data: bytes = SECRET) -> BlobRef:
    return BlobRef(uri=uri, sha256=hashlib.sha256(data).hexdigest(), size=len(data), media_type="application/dicom")


@pytest.fixture
def host_file(tmp_path: Path) -> Path:
    path = tmp_path / "host" / "passwd"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def test_references_outside_the_root_are_refused(tmp_path: Path, host_file: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    digest = hashlib.sha256(SECRET).hexdigest()
    crafted = [
        host_file.as_uri(),  # the file itself, with its true digest and size
        f"{(tmp_path / 'blobs').as_uri()}/../host/passwd",  # traversal from inside the root
        f"file://evil-host{host_file}",
        f"s3://bucket/{digest}",
    ]
    for uri in crafted:
        with pytest.raises(BlobRefused) as refused:
            store.get(_ref(uri))
        assert str(host_file) not in str(refused.value) and str(len(SECRET)) not in str(refused.value)


def test_a_symlink_planted_in_the_store_is_not_followed(tmp_path: Path, host_file: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    digest = hashlib.sha256(SECRET).hexdigest()
    target = store._path(digest)
    target.parent.mkdir(parents=True)
    os.symlink(host_file, target)
    with pytest.raises(BlobRefused):
        store.get(_ref(target.as_uri()))


def test_reads_are_capped_at_the_declared_size_and_missing_is_not_found(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs", max_bytes=1024)
    ref = store.put(b"x" * 100, "image/png")
    Path(ref.uri.removeprefix("file://")).write_bytes(b"x" * 10_000_000)  # grown behind our back
    with pytest.raises(BlobIntegrityError) as grown:
        store.get(ref)
    assert "10000000" not in str(grown.value)
    big = BlobRef(uri=ref.uri, sha256=ref.sha256, size=10_000, media_type="image/png")
    with pytest.raises(BlobRefused):
        store.get(big)  # declares more than the store serves: refused before any read
    Path(ref.uri.removeprefix("file://")).unlink()
    with pytest.raises(BlobNotFound):
        store.get(ref)


async def test_a_crafted_event_dead_letters_without_naming_the_file(tmp_path: Path, host_file: Path) -> None:
    """The reported attack: an event whose claim check names a host file made preprocess read it
    and put its size in the dead letter."""
    settings = Settings(state_dir=tmp_path, blob_url=(tmp_path / "blobs").as_uri())
    stage = PreprocessStage()
    await stage.setup(settings)
    event = StudyReceived(
        study=StudyRef(study_key="st-00000000000000aa", patient_key="pt-00000000000000aa", pipeline_version="t", received_at=datetime.now(UTC)),
        modality="DX", source="http", study_version=1,
        instances=[Instance(instance_key="in-00000000000000aa", source_format="dicom", view_position="PA", blob=_ref(host_file.as_uri()))],
    )
    record = Record("radalign.study.received.v1", 0, 7, b"st-00000000000000aa", codec.encode(event), [])
    [out] = await StageRunner(stage, settings).process(record)
    letter = codec.decode(DeadLetter, out.value)
    assert letter.error_type == "validation" and "claim check refused" in letter.reason
    assert str(host_file) not in letter.reason and str(len(SECRET)) not in letter.reason
