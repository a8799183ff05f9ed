"""Checkpoints: the trained head (with its text anchors) plus what is needed to rebuild the model.

The shipped checkpoint holds no encoder weights (they come from the encoder's package) unless the
encoder was fine-tuned, so it stays small enough to commit.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radalign.concepts.calibration import PlattCalibrator
from radalign.concepts.encoders import DEFAULT_ENCODER, build_encoder
from radalign.concepts.gate import ServedGate
from radalign.concepts.model import ConceptAlignmentHead, ConceptModel, HeadConfig
from radalign.concepts.ood import FeatureDistance
from radalign.concepts.vocabulary import ANCHOR_STATES, ConceptVocabulary, load_vocabulary

FORMAT = "radalign.concepts/2"
READABLE_FORMATS = ("radalign.concepts/1", FORMAT)  # v1: no calibrator, no OOD detector, no gate
CHECKPOINT_DIR = Path(__file__).with_name("checkpoints")
DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "concept_head.v2.pt"


def compute_anchors(vocabulary: ConceptVocabulary | None = None, text_encoder: Any = None) -> torch.Tensor:
    """(K, 3, 384): per observation, the normalised mean embedding of its present / absent /
    uncertain statements."""
    from radalign.text_encoder import get_text_encoder

    vocabulary = vocabulary or load_vocabulary()
    encoder = text_encoder or get_text_encoder()
    anchors = np.zeros((len(vocabulary.concepts), len(ANCHOR_STATES), encoder.dim), dtype=np.float32)
    for s, state in enumerate(ANCHOR_STATES):
        for k, texts in enumerate(vocabulary.anchor_texts(state)):
            mean = encoder.encode(texts).mean(axis=0)
            anchors[k, s] = mean / np.linalg.norm(mean)
    return torch.from_numpy(anchors)


def jsonable(value: Any) -> Any:
    """`value` with paths, enums and numpy scalars turned into JSON types (checkpoint metadata)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, np.floating | np.integer):
        return value.item()
    return value


@dataclass
class Checkpoint:
    head: ConceptAlignmentHead
    encoder_name: str = DEFAULT_ENCODER
    encoder_state: dict[str, torch.Tensor] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: Validation-fitted calibration and the training films' feature distance (identity / unfitted by default).
    calibrator: PlattCalibrator | None = None
    ood: FeatureDistance | None = None

    @property
    def gate(self) -> ServedGate | None:
        """The validity gate decided at training time (None for checkpoints that predate it)."""
        raw = self.meta.get("gate")
        return ServedGate.from_dict(raw) if raw else None

    @property
    def version(self) -> str:
        return str(self.meta.get("model_version", "unversioned"))

    def build_model(self) -> ConceptModel:
        """The full model in eval mode (encoder weights from its package unless fine-tuned ones are stored)."""
        encoder = build_encoder(self.encoder_name, pretrained=self.encoder_state is None)
        if self.encoder_state is not None:
            encoder.load_state_dict(self.encoder_state)
        return ConceptModel(encoder, self.head, self.calibrator, self.ood).eval()


def head_digest(head: ConceptAlignmentHead, *extra: torch.nn.Module | None) -> str:
    """Digest of the head's weights (and of the calibrator / OOD detector when given): a new
    calibration is a new model version."""
    buffer = io.BytesIO()
    states = dict(head.state_dict())
    for i, module in enumerate(m for m in extra if m is not None):
        states |= {f"extra{i}.{k}": v for k, v in module.state_dict().items()}
    for name, tensor in sorted(states.items()):
        buffer.write(name.encode())
        buffer.write(tensor.detach().cpu().numpy().tobytes())
    return hashlib.sha256(buffer.getvalue()).hexdigest()[:12]


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(ckpt.meta)
    meta.setdefault("concepts_version", load_vocabulary().version)
    digest = head_digest(ckpt.head, ckpt.calibrator, ckpt.ood)
    if meta.get("gate"):  # a new gate (assessed set, operating points, OOD threshold) is a new served model too
        import json

        digest = hashlib.sha256((digest + json.dumps(meta["gate"], sort_keys=True)).encode()).hexdigest()[:12]
    meta["model_version"] = f"{meta['concepts_version']}-{digest}"
    ckpt.meta = meta
    payload = {
        "format": FORMAT,
        "encoder": ckpt.encoder_name,
        "head_config": ckpt.head.config.to_dict(),
        "head_state": {k: v.detach().cpu() for k, v in ckpt.head.state_dict().items()},
        "encoder_state": ckpt.encoder_state,
        "calibrator_state": None if ckpt.calibrator is None else {k: v.detach().cpu() for k, v in ckpt.calibrator.state_dict().items()},
        "ood_state": None if ckpt.ood is None else {k: v.detach().cpu() for k, v in ckpt.ood.state_dict().items()},
        "meta": meta,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crash mid-save never leaves a truncated checkpoint
    return path


def load_checkpoint(path: str | Path = DEFAULT_CHECKPOINT) -> Checkpoint:
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if payload.get("format") not in READABLE_FORMATS:
        raise ValueError(f"{path}: not a {FORMAT} checkpoint")
    head = ConceptAlignmentHead(HeadConfig.from_dict(payload["head_config"]))
    head.load_state_dict(payload["head_state"])
    head.eval()
    calibrator = ood = None
    if payload.get("calibrator_state") is not None:
        calibrator = PlattCalibrator(head.config.num_concepts)
        calibrator.load_state_dict(payload["calibrator_state"])
    if payload.get("ood_state") is not None:
        state = payload["ood_state"]
        ood = FeatureDistance(state["basis"].shape[0], state["basis"].shape[1])
        ood.load_state_dict(state)
    return Checkpoint(head=head, encoder_name=payload["encoder"], encoder_state=payload["encoder_state"], meta=payload["meta"],
                      calibrator=calibrator, ood=ood)  # fmt: skip
