"""One model-input contract (`schemas.model_input`): the hand-written Triton configurations and the
stages that write and read the model input agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from schemas.model_input import INPUT_DTYPE, INPUT_MEDIA_TYPE, INPUT_SHAPE, INPUT_SIZE

REPO = Path(__file__).resolve().parents[3]
CONFIGS = sorted((REPO / "triton_models" / "concept_model").glob("config*.pbtxt"))


def _image_dims(config: str) -> list[tuple[int, ...]]:
    """The dims of the "image" input and of every warmup input of the same shape and type."""
    found = []
    image = re.search(r'name:\s*"image"\s*data_type:\s*TYPE_FP32\s*dims:\s*\[([^\]]*)\]', config)
    if image:
        found.append(tuple(int(x) for x in image.group(1).split(",")))
    for dims in re.findall(r"data_type:\s*TYPE_FP32\s+dims:\s*\[([^\]]*)\]\s*random_data", config):
        found.append(tuple(int(x) for x in dims.split(",")))
    return found


def test_the_contract_is_a_square_grayscale_float_image() -> None:
    assert INPUT_SHAPE == (1, INPUT_SIZE, INPUT_SIZE) and INPUT_SIZE > 0
    assert np.dtype(INPUT_DTYPE) == np.float32 and INPUT_MEDIA_TYPE == "application/x-npy"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_the_triton_config_declares_the_contract_shape(path: Path) -> None:
    dims = _image_dims(path.read_text())
    assert len(dims) >= 2, f"{path.name}: no image input or warmup found"  # the input and at least one warmup
    assert set(dims) == {INPUT_SHAPE}, f"{path.name}: image dims {dims} differ from {INPUT_SHAPE}"


def test_the_config_reader_sees_a_wrong_shape() -> None:
    bad = 'input [ { name: "image" data_type: TYPE_FP32 dims: [ 1, 256, 256 ] } ]'
    assert _image_dims(bad) == [(1, 256, 256)]


def test_preprocess_writes_and_the_concept_stage_reads_the_contract_shape() -> None:
    from radalign.concepts.inference import InvalidModelInput, load_model_input
    from radalign.ingest.images import encode_npy, resize_and_pad

    film = np.random.default_rng(0).random((300, 200)).astype(np.float32)
    model_input = resize_and_pad(film)[np.newaxis]  # what preprocess writes, at its default size
    assert model_input.shape == INPUT_SHAPE
    assert load_model_input(encode_npy(model_input)).shape == INPUT_SHAPE
    with pytest.raises(InvalidModelInput):
        load_model_input(encode_npy(np.zeros((1, INPUT_SIZE + 1, INPUT_SIZE + 1), np.float32)))
