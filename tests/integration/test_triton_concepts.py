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
from radalign.concepts_training.data import load_image, pediatric_images
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
        start = (await stats_client.get_inference_statistics("concept_model", as_json=True))["model_stats"][0]
        async with TritonConceptClient(concept_triton.triton_grpc_url, timeout_s=120) as client:
            sequential = [await client.infer(img) for img in images]
            # the sequential requests' statistics land after their responses: wait for all of them
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                before = (await stats_client.get_inference_statistics("concept_model", as_json=True))["model_stats"][0]
                if int(before["inference_count"]) - int(start["inference_count"]) >= len(images) or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.2)
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
    for i, scores in enumerate(results):
        np.testing.assert_allclose(scores.probabilities, sequential[i % len(images)].probabilities, atol=2e-4)
        np.testing.assert_allclose(scores.embedding, sequential[i % len(images)].embedding, atol=2e-4)
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


async def _head_of(settings: Settings, image: np.ndarray, site: str, want: str | None, role: str = "head") -> object:
    """Infer until Triton answers with head `want` for `site` (it re-reads the registry within a
    second of a change), bounded; returns the last answer."""
    deadline = asyncio.get_running_loop().time() + 15
    async with TritonConceptClient(settings.triton_grpc_url, timeout_s=60) as client:
        while True:
            scores = await client.infer(image, site)
            head = getattr(scores, role)
            if (head.version if head else None) == want or asyncio.get_running_loop().time() > deadline:
                return scores
            await asyncio.sleep(0.3)


async def test_site_model_lifecycle_archive_train_shadow_promote_rollback(concept_triton: Settings, tmp_path: Path) -> None:
    """Against the real Triton, no restart: the shipped NIH site model serves its site only; a
    candidate trained from an archive runs in shadow; one that fails its gate is refused; rollback
    returns the site to the generic model and promotion brings the site model back."""
    from radalign.concepts_training.data import pediatric_images
    from radalign.pseudonymizer import Pseudonymizer
    from radalign.sites.head import load_head, predict
    from radalign.sites.registry import PromotionRefused, SiteRegistry
    from radalign.sites.train import train_site
    from radalign.sites.trainset import TrainingSet, build_from_manifest

    registry = SiteRegistry(concept_triton.sites_dir)
    site = "nih-cxr800"
    live = registry.state(site).live
    assert live, "the shipped nih-cxr800 model is seeded and live"
    image = _real_images()[0]
    served = await _head_of(concept_triton, image, site, live)
    assert served.head is not None and served.head.site == site and served.head.version == live
    # the site head's answer is the head file applied to the encoder's pooled features
    head, meta = load_head(registry.head_path(site, live))
    from radalign.concepts.encoders import build_encoder
    from radalign.concepts_training.features import normalise

    assert meta["encoder"] == "efficientnet-lite0-ms"  # the served pass's multi-scale features, computed independently here
    with torch.inference_mode():
        pooled = build_encoder(meta["encoder"]).eval()(normalise(torch.from_numpy(image[None]))).mean(dim=(2, 3)).numpy()
    want, want_ood = predict(head, pooled)
    np.testing.assert_allclose(served.probabilities, want[0], atol=2e-4)
    assert abs(served.ood_score - want_ood[0]) < 1e-3 * max(1.0, abs(want_ood[0]))
    assert served.head.gate.assessed == meta["gate"]["assessed"]
    other = await _head_of(concept_triton, image, "OTHER-SITE", None)
    assert other.head is None  # a site without a model gets the generic model

    # archive -> training set -> candidate, from a small real archive (16 pediatric films with reports)
    films = pediatric_images()
    assert films, "pneumonia-model-package provides the pediatric films"
    manifest = tmp_path / "archive.csv"
    lines = ["image,patient_id,study_id,report"]
    for i, (path, label) in enumerate(films):
        report = "IMPRESSION: No acute cardiopulmonary abnormality." if label == "normal" else "IMPRESSION: Right lower lobe pneumonia."
        lines.append(f"{path},peds-{i},study-{i},{report}")
    manifest.write_text("\n".join(lines) + "\n")
    trainset = TrainingSet(concept_triton.sites_dir, "PEDS")
    path, added = build_from_manifest(manifest, trainset, Pseudonymizer("s" * 40), "PEDS", progress=False)
    assert added == len(films) and build_from_manifest(manifest, trainset, Pseudonymizer("s" * 40), "PEDS", progress=False)[1] == 0
    model = train_site("PEDS", path, registry.heads_dir("PEDS"), cache_dir=tmp_path / "cache", progress=False)
    version = registry.add_candidate("PEDS", model.path, by="test")
    shadowed = await _head_of(concept_triton, image, "PEDS", version, role="shadow_head")
    assert shadowed.shadow_head is not None and shadowed.shadow_head.version == version
    assert shadowed.head is None and shadowed.shadow_probabilities is not None  # scored in shadow, never served
    if not model.card["summary"]["passed_gate"]:  # 16 films: too few validation labels for any claim
        with pytest.raises(PromotionRefused):
            registry.promote("PEDS", version, by="test")

    # rollback and promote, recorded, picked up without a restart
    registry.rollback(site, by="test")
    assert (await _head_of(concept_triton, image, site, None)).head is None
    registry.promote(site, live, by="test")
    assert (await _head_of(concept_triton, image, site, live)).head is not None
    actions = [e["action"] for e in registry.state(site).events]
    assert actions[-2:] == ["rollback", "promote"] and all(e["by"] and e["at"] for e in registry.state(site).events)
