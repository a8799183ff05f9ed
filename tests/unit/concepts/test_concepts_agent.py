"""The concept stage's claim-check read: which failures dead-letter at once and which are retried."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from radalign.blobstore import LocalBlobStore
from radalign.framework.retry import PermanentError
from schemas.events import StudyPreprocessed
from schemas.examples import EXAMPLES
from services.concepts.agent import fetch_model_input


def _event(blob) -> StudyPreprocessed:
    payload = dict(EXAMPLES["study_preprocessed"][0], model_input=blob.model_dump())
    return StudyPreprocessed.model_validate(payload)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_valid_input_is_read(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    ref = store.put(_npy(np.full((1, 224, 224), 0.5, dtype=np.float32)), "application/x-npy")
    assert fetch_model_input(store, _event(ref)).shape == (1, 224, 224)


def test_missing_corrupt_or_wrong_inputs_are_permanent(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    good = store.put(_npy(np.zeros((1, 224, 224), dtype=np.float32)), "application/x-npy")
    Path(good.uri.removeprefix("file://")).write_bytes(b"x" * good.size)  # same size, other bytes
    with pytest.raises(PermanentError, match="BlobIntegrityError") as corrupt:
        fetch_model_input(store, _event(good))
    assert corrupt.value.error_type == "validation"
    Path(good.uri.removeprefix("file://")).unlink()
    with pytest.raises(PermanentError, match="missing") as missing:
        fetch_model_input(store, _event(good))
    assert missing.value.error_type == "dependency"  # the store lost it: replayable, not bad input
    wrong = store.put(_npy(np.zeros((3, 10), dtype=np.float32)), "application/x-npy")
    with pytest.raises(PermanentError) as shape:
        fetch_model_input(store, _event(wrong))
    assert shape.value.error_type == "validation"


def test_an_unreachable_store_is_left_to_the_retry(tmp_path: Path) -> None:
    class Unreachable:
        def get(self, ref):
            raise ConnectionError("bucket did not answer")

    ref = LocalBlobStore(tmp_path).put(b"x", "application/x-npy")
    with pytest.raises(ConnectionError):
        fetch_model_input(Unreachable(), _event(ref))  # type: ignore[arg-type]
