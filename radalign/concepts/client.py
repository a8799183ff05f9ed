"""Async Triton client for the concept model (gRPC). Concurrent `infer` calls are what lets
Triton's dynamic batcher group requests, so callers should keep several in flight."""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import numpy as np

from radalign.concepts import EMBED_DIM, MODEL_NAME
from radalign.concepts.gate import ServedGate, SiteHeadInfo
from radalign.concepts.vocabulary import OBSERVATIONS
from schemas.model_input import INPUT_SIZE

#: Triton priority level of a STAT request (1 is the highest; 0 asks for the model's default, which
#: config.pbtxt sets to the lower level 2 for routine studies).
STAT_PRIORITY = 1
OUTPUTS = ("probabilities", "embedding", "ood_score", "head", "shadow_probabilities", "shadow_ood_score", "shadow_head")


@dataclass(frozen=True)
class ServedScores:
    probabilities: np.ndarray  # (14,) calibrated, of the head that scored the film
    embedding: np.ndarray  # (384,)
    ood_score: float  # that head's OOD score
    head: SiteHeadInfo | None  # None: the generic model
    shadow_probabilities: np.ndarray | None = None
    shadow_ood_score: float | None = None
    shadow_head: SiteHeadInfo | None = None


def _head(raw: np.ndarray) -> SiteHeadInfo | None:
    value = raw.reshape(-1)[0]
    meta = json.loads(value.decode() if isinstance(value, bytes) else str(value))
    if not meta:
        return None
    return SiteHeadInfo(meta["site"], meta["version"], ServedGate.from_dict(meta["gate"]))


def channel_args() -> list[tuple[str, int]]:
    """tritonclient's default channel options plus a short reconnect backoff.

    gRPC backs off reconnecting for up to 120 s after a refused connection, failing every call
    meanwhile; a Triton restart would then outlast the stage's retries and dead-letter studies
    that one more second would have served (seen in tests/integration/test_pipeline.py)."""
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

    keepalive = KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


class TritonConceptClient(AbstractAsyncContextManager["TritonConceptClient", None]):  # its __aenter__ returns self
    def __init__(self, url: str, model: str = MODEL_NAME, timeout_s: float = 30.0) -> None:
        from tritonclient.grpc.aio import InferenceServerClient

        self.url = url
        self.model = model
        self.timeout_s = timeout_s
        #: The served checkpoint's version (config parameter `model_version`), known after `ready()`.
        self.model_version = "unknown"
        #: Observations the served checkpoint learnt (config parameter `supported_observations`);
        #: None while unknown (then every observation is reported).
        self.supported: frozenset[str] | None = None
        #: The served checkpoint's validity gate (config parameter `concept_gate`); None for a model without one.
        self.gate: ServedGate | None = None
        self._client = InferenceServerClient(url, channel_args=channel_args())

    async def ready(self) -> bool:
        """True when the model is loaded; also learns the served model version."""
        try:
            if not await self._client.is_model_ready(self.model, client_timeout=self.timeout_s):
                return False
            config = await self._client.get_model_config(self.model, as_json=True, client_timeout=self.timeout_s)
        except Exception:  # noqa: BLE001 - any transport or server error means "not ready"
            return False
        params = config.get("config", {}).get("parameters", {})
        self.model_version = params.get("model_version", {}).get("string_value") or self.model_version
        supported = params.get("supported_observations", {}).get("string_value")
        if supported:
            self.supported = frozenset(supported.split("|"))
        self.gate = ServedGate.from_triton_parameters({k: v.get("string_value", "") for k, v in params.items()})
        return True

    async def infer(self, image: np.ndarray, site: str | None = None, *, stat: bool = False) -> ServedScores:
        """One image (1, 224, 224) or (224, 224) float32 in [0, 1], from `site` -> the served scores
        (the site's live head when it has one, else the generic model; its shadow candidate's too).
        `stat` asks Triton's scheduler for the higher of the model's two priority levels
        (`priority_levels: 2` in config.pbtxt): the request overtakes queued routine requests."""
        from tritonclient.grpc import InferInput, InferRequestedOutput

        array = np.asarray(image, dtype=np.float32)
        if array.shape == (INPUT_SIZE, INPUT_SIZE):
            array = array[None]
        if array.shape != (1, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected (1, {INPUT_SIZE}, {INPUT_SIZE}), got {array.shape}")
        batch = np.ascontiguousarray(array[None])
        inp = InferInput("image", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        site_input = InferInput("site", [1, 1], "BYTES")
        site_input.set_data_from_numpy(np.array([[(site or "").encode()]], dtype=np.object_))
        outputs = [InferRequestedOutput(name) for name in OUTPUTS]
        result = await self._client.infer(self.model, [inp, site_input], outputs=outputs, client_timeout=self.timeout_s,
                                          priority=STAT_PRIORITY if stat else 0)
        probs = result.as_numpy("probabilities").reshape(-1)
        emb = result.as_numpy("embedding").reshape(-1)
        ood = result.as_numpy("ood_score").reshape(-1)
        if probs.shape != (len(OBSERVATIONS),) or emb.shape != (EMBED_DIM,) or ood.shape != (1,):
            raise RuntimeError(f"unexpected output shapes {probs.shape}, {emb.shape}, {ood.shape}")
        shadow = _head(result.as_numpy("shadow_head"))
        return ServedScores(
            probs, emb, float(ood[0]), _head(result.as_numpy("head")),
            shadow_probabilities=result.as_numpy("shadow_probabilities").reshape(-1) if shadow else None,
            shadow_ood_score=float(result.as_numpy("shadow_ood_score").reshape(-1)[0]) if shadow else None, shadow_head=shadow,
        )  # fmt: skip

    async def close(self) -> None:
        await self._client.close()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
