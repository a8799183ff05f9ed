"""Concept-aligned vision-language model (RadAlign step 1): image -> 14 CheXpert concept scores
plus an image embedding in the report text space.

Modules: `vocabulary` (the versioned concepts file), `encoders` (pluggable image encoders),
`model` (alignment head and the full model), `losses`, `data` (manifests, labels, patient split),
`sources` (multi-source manifests, per-source label masks and splits, balanced sampling),
`features` (frozen-encoder feature cache, per image), `calibration` (Platt scaling, ECE, operating
points), `ood` (feature-distance OOD score), `gate` (the validity gate and site profiles),
`validation` (what training decides on held-out data), `checkpoint`, `train` / `evaluate` /
`audit` (typer commands), `scoring` (probabilities -> ConceptScore), `export` (TorchScript +
Triton repository), `client` (async Triton client).
"""

from __future__ import annotations

#: Side of the square model input the preprocess stage writes: float32 (1, 224, 224) in [0, 1].
INPUT_SIZE = 224
#: Width of the text space (all-MiniLM-L6-v2) the image embedding and anchors live in.
EMBED_DIM = 384
#: Triton model name.
MODEL_NAME = "concept_model"

__all__ = ["EMBED_DIM", "INPUT_SIZE", "MODEL_NAME"]
