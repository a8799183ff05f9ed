"""Fixtures shared by the intake unit tests (gateway, preprocess): settings, an in-memory
publisher and pseudonym store, and a blob store in a temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from radalign.blobstore import LocalBlobStore
from radalign.config import Settings
from radalign.ingest.pseudonyms import InMemoryPseudonymStore
from radalign.testing.ingest import RecordingPublisher


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path, study_quiet_s=0.2, deid_secret="unit-test-secret", gateway_tokens="tok-1,tok-2",
        gateway_max_bytes=16 * 1024 * 1024, dicom_port=0, gateway_host="127.0.0.1",
    )


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture
def pseudonyms() -> InMemoryPseudonymStore:
    return InMemoryPseudonymStore()
