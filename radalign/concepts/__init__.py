"""Concept-aligned vision-language model (RadAlign step 1), serving face: image -> 14 CheXpert
concept scores plus an image embedding in the report text space.

Modules: `vocabulary` (the versioned concepts file), `checkpoint` (load and save), `encoders`
(pluggable image encoders), `model` (alignment head and the full model), `calibration` (Platt
scaling, operating points), `ood` (feature-distance OOD score), `gate` (the validity gate and site
profiles), `policy` (the claim policy), `scoring` (probabilities -> ConceptScore), `inference`
(the concept stage's pure core), `client` (async Triton client), `metrics_site` (per-site drift
metrics), `heatmaps` (per-concept attention maps for review). Training, evaluation and export
live beside it in `radalign.concepts_training`, which this package never imports.
"""

from __future__ import annotations

#: Width of the text space (all-MiniLM-L6-v2) the image embedding and anchors live in.
EMBED_DIM = 384
#: Triton model name.
MODEL_NAME = "concept_model"

#: The model input (its size, shape and encoding) is the contract `schemas.model_input`.

__all__ = ["EMBED_DIM", "MODEL_NAME"]
