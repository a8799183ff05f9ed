"""The exported concept model served by Triton answers like the PyTorch model it came from."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from radalign.concepts.client import TritonConceptClient
from radalign.concepts.data import load_image, pediatric_images
from radalign.config import Settings

pytestmark = pytest.mark.integration

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cxr-public"


def _real_images() -> list[np.ndarray]:
    """Real chest radiographs: the pediatric JPEGs that ship in a wheel, plus a few cxr-public
    PNGs of different sizes and views when the shared data is here."""
    paths = [p for p, _ in pediatric_images()[:6]]
    if SHARED.is_dir():
        paths += sorted((SHARED / "images").glob("*.png"))[::150]
    if not paths:
        pytest.skip("no real chest images: pneumonia-model-package is not installed and ../shared/data is absent")
    return [load_image(p) for p in paths]


@pytest.fixture(scope="module")
def concept_triton() -> Iterator[Settings]:
    if importlib.util.find_spec("pytriton") is None:  # only its files are used, never imported
        pytest.skip("nvidia-pytriton (tritonserver binary) is not installed")
    if not DEFAULT_CHECKPOINT.is_file():
        pytest.skip(f"no shipped checkpoint at {DEFAULT_CHECKPOINT}")
    from radalign.testing.triton import local_concept_triton

    with local_concept_triton(DEFAULT_CHECKPOINT) as settings:
        yield settings


@pytest.fixture(scope="module")
def torch_model() -> torch.nn.Module:
    return load_checkpoint(DEFAULT_CHECKPOINT).build_model()


async def test_triton_outputs_equal_the_torch_forward_pass(concept_triton: Settings, torch_model: torch.nn.Module) -> None:
    images = _real_images()
    async with TritonConceptClient(concept_triton.triton_grpc_url, timeout_s=60) as client:
        assert await client.ready()
        assert client.model_version == load_checkpoint(DEFAULT_CHECKPOINT).version
        served = [await client.infer(img) for img in images]
    with torch.inference_mode():
        want_probs, want_emb, want_ood = torch_model(torch.from_numpy(np.stack(images)))
    for i, scores in enumerate(served):
        probs, emb, ood = scores.probabilities, scores.embedding, scores.ood_score
        assert scores.head is None  # no site: the generic model
        assert probs.shape == (14,) and emb.shape == (384,)
        np.testing.assert_allclose(probs, want_probs[i].numpy(), atol=2e-4, err_msg=f"image {i}")
        np.testing.assert_allclose(emb, want_emb[i].numpy(), atol=2e-4, err_msg=f"image {i}")
        np.testing.assert_allclose(ood, float(want_ood[i]), rtol=1e-3, atol=1e-3, err_msg=f"image {i}")
        assert abs(float(np.linalg.norm(emb)) - 1.0) < 1e-4
    # different images give different answers (the server is not returning a constant)
    assert np.abs(served[0].embedding - served[-1].embedding).max() > 1e-3


async def test_concurrent_requests_are_batched_and_keep_their_order(concept_triton: Settings) -> None:
    from tritonclient.grpc.aio import InferenceServerClient

    images = _real_images()
    burst = [images[i % len(images)] for i in range(24)]
    stats_client = InferenceServerClient(concept_triton.triton_grpc_url)
    try:
        before = (await stats_client.get_inference_statistics("concept_model", as_json=True))["model_stats"][0]
        async with TritonConceptClient(concept_triton.triton_grpc_url, timeout_s=120) as client:
            sequential = [await client.infer(img) for img in images]
            before = (await stats_client.get_inference_statistics("concept_model", as_json=True))["model_stats"][0]
            results = await asyncio.gather(*(client.infer(img) for img in burst))
        # Triton records a batch's statistics after its responses are sent: poll briefly
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            after = (await stats_client.get_inference_statistics("concept_model", as_json=True))["model_stats"][0]
            done = int(after["inference_count"]) - int(before["inference_count"]) >= len(burst)
            if done or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await stats_client.close()
    for i, (probs, emb, _) in enumerate(results):
        np.testing.assert_allclose(probs, sequential[i % len(images)][0], atol=2e-4)
        np.testing.assert_allclose(emb, sequential[i % len(images)][1], atol=2e-4)
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == len(burst)
    assert executions < inferences, "dynamic batching should have merged concurrent requests"


async def test_served_model_reports_not_assessed_and_ood_as_the_checkpoint_says(concept_triton: Settings) -> None:
    """The gate read from the served Triton config is the checkpoint's; a chest film gets scores for
    the assessed observations only, and noise gets no assessment at all."""
    from radalign.concepts.inference import build_concepts_event
    from schemas.events import StudyPreprocessed
    from schemas.examples import EXAMPLES

    shipped = load_checkpoint(DEFAULT_CHECKPOINT).gate
    assert shipped is not None, "the shipped checkpoint must carry a validity gate"
    chest = _real_images()[0]
    noise = np.random.default_rng(0).random((1, 224, 224)).astype(np.float32)
    event = StudyPreprocessed.model_validate(EXAMPLES["study_preprocessed"][0])
    async with TritonConceptClient(concept_triton.triton_grpc_url, timeout_s=60) as client:
        assert await client.ready()
        assert client.gate == shipped
        outs = {}
        for name, image in (("chest", chest), ("noise", noise)):
            scores = await client.infer(image)
            probs, emb, ood = scores.probabilities, scores.embedding, scores.ood_score
            outs[name] = build_concepts_event(event, probs, emb, "concept_model", client.model_version, gate=client.gate, ood_score=ood)
    film = outs["chest"]
    assert film.ood is None
    assert {c.observation.value for c in film.concepts} == set(shipped.assessed)
    assert not {o.value for o in film.not_assessed} & set(shipped.assessed)
    assert len(film.concepts) + len(film.not_assessed) == 14
    for c in film.concepts:
        point = shipped.operating_points[c.observation.value]
        assert (c.present_threshold, c.absent_threshold) == (point.present, point.absent)
    assert outs["noise"].ood is not None and outs["noise"].ood.reason == "far_from_training_data"
    assert outs["noise"].concepts == [] and len(outs["noise"].not_assessed) == 14
