"""Per-concept heatmaps: where each concept query looked, from the head's attention over the 7x7 features.

Computed on demand (the review page asks for a study's maps once, then they are cached): the
served model exports probabilities and the embedding only, and attention maps are 14 x 49 floats
a reader looks at for a few studies, so they do not travel on every event. The maps come from the
checkpoint this process loads; `ConceptAttention.model_version` says which, and the review page
warns when it differs from the model that drafted the report.

Attention says where the concept query drew its evidence from, not that the finding is there
(an absent finding's query still attends somewhere): the page shows it beside the probability.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from schemas.events import Observation

if TYPE_CHECKING:
    from radalign.concepts.model import ConceptModel

#: Display window percentiles: a radiograph's useful range without burnt-in labels and black padding.
WINDOW_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class AttentionMaps:
    observations: tuple[Observation, ...]
    probabilities: np.ndarray  # (K,) the local checkpoint's calibrated probabilities (0.5 where not learnt)
    maps: np.ndarray  # (K, gh, gw), each row sums to 1 over the grid
    model_version: str

    def map_for(self, observation: Observation) -> np.ndarray:
        return self.maps[self.observations.index(observation)]


class ConceptAttention:
    """The concept model on CPU, loaded once per process (thread-safe), answering attention maps."""

    def __init__(self, checkpoint: str | Path | None = None) -> None:
        self.checkpoint = checkpoint
        self._model: ConceptModel | None = None
        self._version = ""
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                import torch

                from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint

                torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
                ckpt = load_checkpoint(self.checkpoint or DEFAULT_CHECKPOINT)
                self._model = ckpt.build_model().eval()
                self._version = ckpt.version
        return self._model

    @property
    def model_version(self) -> str:
        self._load()
        return self._version

    def maps(self, model_input: np.ndarray) -> AttentionMaps:
        """`model_input`: the preprocess output, float32 (1, H, W) in [0, 1]."""
        import torch

        from radalign.concepts.vocabulary import OBSERVATIONS

        array = np.asarray(model_input, dtype=np.float32)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3 or array.shape[0] != 1:
            raise ValueError(f"expected a (1, H, W) model input, got shape {array.shape}")
        model = self._load()
        with torch.inference_mode():
            images = torch.from_numpy(array)[None]  # (1, 1, H, W)
            features = model.encoder(model.normalise(images))
            out = model.head(features, return_attention=True)
            # Calibrated as the served model calibrates (ConceptModel.forward): the page shows the
            # probabilities the draft rests on.
            logits = torch.where(model.head.supported, model.calibrator(out.logits), torch.zeros_like(out.logits))
        gh, gw = model.head.config.grid
        attention = out.attention[0].reshape(-1, gh, gw).numpy()
        return AttentionMaps(OBSERVATIONS, torch.sigmoid(logits[0]).numpy(), attention, self._version)


    def embedding(self, model_input: np.ndarray) -> np.ndarray:
        """The aligned image embedding (384,), as the served model computes it from the same input."""
        import torch

        array = np.asarray(model_input, dtype=np.float32).reshape(1, 1, *np.shape(model_input)[-2:])
        model = self._load()
        with torch.inference_mode():
            _, embedding, _ood_distance = model(torch.from_numpy(array))
        return embedding[0].numpy()


def display_window(image: np.ndarray, percentiles: tuple[float, float] = WINDOW_PERCENTILES) -> np.ndarray:
    """(H, W) float -> uint8 with a percentile window over the non-padding pixels (the letterbox
    border is exact zeros and would otherwise pull the window down)."""
    pixels = np.asarray(image, dtype=np.float32)
    body = pixels[pixels > 0]
    if body.size < 16:
        body = pixels.reshape(-1)
    lo, hi = np.percentile(body, percentiles)
    if hi <= lo:
        lo, hi = float(pixels.min()), float(pixels.max()) or 1.0
    scaled = np.clip((pixels - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return (scaled * 255.0 + 0.5).astype(np.uint8)


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def image_png(model_input: np.ndarray) -> bytes:
    """The film as the model saw it, windowed for display, as a grayscale PNG."""
    return _png(display_window(np.asarray(model_input).reshape(np.asarray(model_input).shape[-2:])))


def upsample(attention: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(gh, gw) -> (H, W), bilinear, rescaled to [0, 1] (min-max of this map)."""
    from PIL import Image

    grid = np.asarray(attention, dtype=np.float32)
    lo, hi = float(grid.min()), float(grid.max())
    normalised = (grid - lo) / (hi - lo) if hi > lo else np.zeros_like(grid)
    resized = Image.fromarray(normalised, mode="F").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def overlay_png(model_input: np.ndarray, attention: np.ndarray, alpha: float = 0.5) -> bytes:
    """The windowed film with the attention map in a perceptual colormap (inferno) on top,
    more opaque where attention is higher, as an RGB PNG."""
    from matplotlib import colormaps

    gray = display_window(np.asarray(model_input).reshape(np.asarray(model_input).shape[-2:])).astype(np.float32) / 255.0
    heat = upsample(attention, (gray.shape[0], gray.shape[1]))
    colour = colormaps["inferno"](heat)[..., :3]
    weight = alpha * heat[..., None]
    blended = (1 - weight) * gray[..., None] + weight * colour
    return _png((np.clip(blended, 0, 1) * 255 + 0.5).astype(np.uint8))
