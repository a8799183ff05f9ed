"""The concept-aligned model: image encoder -> concept-query attention -> text-space scores.

Head (RadAlign's concept alignment, sized for CPU serving):
- the encoder's spatial features (B, C, h, w) become h*w tokens projected to `d_model`, plus a
  learned position embedding (where a finding lies matters: basal vs apical);
- 14 learnable concept queries attend over the tokens (multi-head attention);
- each attended query is projected into the 384-d text space and compared (cosine, learned
  temperature) with its concept's text anchors: present / absent / uncertain statements embedded
  by `radalign.text_encoder` and stored as a buffer, so serving needs no text encoder;
- probability of "present" = sigmoid(scale * (cos(present) - cos(absent)) + bias_c), or exactly
  0.5 for an observation the training data held only one class of (`supported` buffer);
- the retrieval embedding is a projection of the pooled tokens into the same text space, L2-normalised.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from radalign.concepts import EMBED_DIM
from radalign.concepts.vocabulary import ANCHOR_STATES, OBSERVATIONS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class HeadConfig:
    in_channels: int = 1280
    grid: tuple[int, int] = (7, 7)
    d_model: int = 128
    num_heads: int = 4
    embed_dim: int = EMBED_DIM
    num_concepts: int = len(OBSERVATIONS)
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> HeadConfig:
        return cls(**{**raw, "grid": tuple(raw["grid"])})


@dataclass
class HeadOutput:
    logits: torch.Tensor  # (B, K) binary present-vs-absent logit
    state_logits: torch.Tensor  # (B, K, 3) scaled cosine to present / absent / uncertain anchors
    embedding: torch.Tensor  # (B, E) L2-normalised
    #: (B, K, h*w) concept queries' attention over the image tokens, averaged over heads; only
    #: with `forward(..., return_attention=True)` (the review page's heatmaps, radalign.concepts.heatmaps).
    attention: torch.Tensor | None = None


class ConceptAlignmentHead(nn.Module):
    # Buffers registered in __init__ (declared for the type checker; nn.Module resolves them).
    anchors: torch.Tensor
    supported: torch.Tensor

    def __init__(self, config: HeadConfig, anchors: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        c = config
        self.token_proj = nn.Linear(c.in_channels, c.d_model)
        self.token_norm = nn.LayerNorm(c.d_model)
        self.position = nn.Parameter(torch.zeros(1, c.grid[0] * c.grid[1], c.d_model))
        self.queries = nn.Parameter(torch.randn(c.num_concepts, c.d_model) * 0.02)
        self.attention = nn.MultiheadAttention(c.d_model, c.num_heads, dropout=c.dropout, batch_first=True)
        self.query_norm = nn.LayerNorm(c.d_model)
        self.concept_proj = nn.Linear(c.d_model, c.embed_dim)
        self.image_proj = nn.Linear(c.d_model, c.embed_dim)
        self.dropout = nn.Dropout(c.dropout)
        # CLIP-style learned temperature, initialised at 1/0.07 and clamped at 100.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.concept_bias = nn.Parameter(torch.zeros(c.num_concepts))
        if anchors is None:
            anchors = F.normalize(torch.randn(c.num_concepts, len(ANCHOR_STATES), c.embed_dim), dim=-1)
        if anchors.shape != (c.num_concepts, len(ANCHOR_STATES), c.embed_dim):
            raise ValueError(f"anchors must be (K, 3, E), got {tuple(anchors.shape)}")
        self.register_buffer("anchors", F.normalize(anchors.float(), dim=-1))
        # Observations the training data held both classes of. The others answer exactly 0.5
        # ("uncertain" under any thresholds around it) instead of a confident guess learnt from
        # one class only (cxr-public has no cardiomegaly positives, for example).
        self.register_buffer("supported", torch.ones(c.num_concepts, dtype=torch.bool))
        nn.init.trunc_normal_(self.position, std=0.02)

    def forward(self, features: torch.Tensor, return_attention: bool = False) -> HeadOutput:
        b = features.shape[0]
        tokens = self.token_norm(self.token_proj(features.flatten(2).transpose(1, 2)))  # (B, hw, d)
        pooled = tokens.mean(dim=1)
        keys = tokens + self.position
        queries = self.queries.unsqueeze(0).expand(b, -1, -1)
        attended, weights = self.attention(queries, keys, keys, need_weights=return_attention, average_attn_weights=True)
        attended = self.query_norm(queries + self.dropout(attended))
        concept_vectors = F.normalize(self.concept_proj(attended), dim=-1)  # (B, K, E)
        scale = self.logit_scale.exp().clamp(max=100.0)
        state_logits = scale * torch.einsum("bke,kse->bks", concept_vectors, self.anchors)
        logits = state_logits[..., 0] - state_logits[..., 1] + self.concept_bias
        logits = torch.where(self.supported, logits, torch.zeros_like(logits))
        embedding = F.normalize(self.image_proj(self.dropout(pooled)), dim=-1)
        return HeadOutput(logits=logits, state_logits=state_logits, embedding=embedding, attention=weights if return_attention else None)


class ConceptModel(nn.Module):
    """(B, 1, 224, 224) grayscale in [0, 1] -> (calibrated probabilities (B, 14), embedding (B, 384),
    OOD score (B,)).

    This is what is exported to TorchScript and served by Triton; it replicates the gray channel
    and applies ImageNet normalisation itself so callers send the preprocess output unchanged.
    The calibrator (fitted on validation) maps the head's logits to calibrated probabilities;
    the OOD score is the distance of the pooled encoder features from the training films."""

    # Buffers registered in __init__ (declared for the type checker; nn.Module resolves them).
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, encoder: nn.Module, head: ConceptAlignmentHead, calibrator: nn.Module | None = None, ood: nn.Module | None = None) -> None:
        super().__init__()
        from radalign.concepts.calibration import PlattCalibrator
        from radalign.concepts.ood import FeatureDistance

        self.encoder = encoder
        self.head = head
        self.calibrator = calibrator if calibrator is not None else PlattCalibrator(head.config.num_concepts)
        self.ood = ood if ood is not None else FeatureDistance(head.config.in_channels, 0)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images.expand(-1, 3, -1, -1) - self.mean) / self.std

    def forward_train(self, images: torch.Tensor) -> HeadOutput:
        return self.head(self.encoder(self.normalise(images)))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.encoder(self.normalise(images))
        out = self.head(features)
        logits = torch.where(self.head.supported, self.calibrator(out.logits), torch.zeros_like(out.logits))
        return torch.sigmoid(logits), out.embedding, self.ood(features.mean(dim=(2, 3)))


class ServedConceptModel(nn.Module):
    """What Triton serves: the concept model's three outputs plus pooled encoder features (B, C)
    from which each site's head (radalign.sites.head) scores the film: the encoder runs once per
    film whatever the number of site heads. For the plain EfficientNet-Lite0 encoder the pooled
    features are multi-scale (`site_feature_encoder`: the same pass, a few inner blocks kept);
    the generic head reads the last 1280 channels, exactly the plain encoder's output."""

    def __init__(self, model: ConceptModel, twin: tuple[nn.Module, str] | None = None) -> None:
        """`twin`: (the multi-scale twin of the model's encoder, its registered name), from
        `radalign.concepts.encoders.site_feature_encoder`; None: the encoder's own features."""
        super().__init__()
        self.model = model
        self.features = twin[0] if twin is not None else model.encoder
        #: The encoder name site heads must have been trained on (`radalign.sites.head`).
        self.site_features: str = twin[1] if twin is not None else ""
        self.last_channels = int(getattr(model.encoder, "out_channels", 0) or 0)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        all_features = self.features(m.normalise(images))
        features = all_features[:, all_features.shape[1] - self.last_channels :] if self.last_channels else all_features
        out = m.head(features)
        logits = torch.where(m.head.supported, m.calibrator(out.logits), torch.zeros_like(out.logits))
        return torch.sigmoid(logits), out.embedding, m.ood(features.mean(dim=(2, 3))), all_features.mean(dim=(2, 3))
