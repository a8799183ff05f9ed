"""Training losses: multi-label concept BCE with explicit uncertain-label handling, and an
image-report contrastive loss.

Uncertain labels (CheXpert -1) follow one policy, chosen per run (`UncertaintyPolicy`):
- `ignore` (U-Ignore, default): masked out of the BCE, like unknown labels. Chosen because the
  labels here come from coarse dataset tags or a rule-based labeler, where "uncertain" is the
  least reliable state;
- `zeros` (U-Zeros) / `ones` (U-Ones): counted as absent / present;
- `anchor`: masked out of the BCE, and instead pulled toward the concept's *uncertain* text anchor
  (3-way cross-entropy over present / absent / uncertain cosines).
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F


class UncertaintyPolicy(str, Enum):
    IGNORE = "ignore"
    ZEROS = "zeros"
    ONES = "ones"
    ANCHOR = "anchor"


def concept_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    policy: UncertaintyPolicy = UncertaintyPolicy.IGNORE,
    state_logits: torch.Tensor | None = None,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Masked BCE over (B, K) logits; labels hold 1 / 0 / -1 (uncertain) / NaN (unknown)."""
    known = ~torch.isnan(labels)
    uncertain = known & (labels == -1)
    certain = known & ~uncertain
    targets = torch.where(certain, labels, torch.zeros_like(labels))
    mask = certain.clone()
    if policy is UncertaintyPolicy.ZEROS:
        mask |= uncertain
    elif policy is UncertaintyPolicy.ONES:
        targets = torch.where(uncertain, torch.ones_like(targets), targets)
        mask |= uncertain
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none", pos_weight=pos_weight)
    weights = mask.to(bce.dtype)
    loss = (bce * weights).sum() / weights.sum().clamp(min=1.0)
    if policy is UncertaintyPolicy.ANCHOR and uncertain.any():
        if state_logits is None:
            raise ValueError("the anchor policy needs state_logits")
        chosen = state_logits[uncertain]  # (n, 3)
        target = torch.full((chosen.shape[0],), 2, dtype=torch.long, device=chosen.device)
        loss = loss + F.cross_entropy(chosen, target)
    return loss


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, has_text: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE between L2-normalised image and report embeddings of the rows with a report.

    Several images of one study share a report: all identical reports count as positives, and the
    loss is -log of the probability mass on them (not an average of per-positive terms, which
    would still push duplicates apart)."""
    idx = has_text.nonzero(as_tuple=True)[0]
    if idx.numel() < 2:
        return image_emb.sum() * 0.0
    img, txt = image_emb[idx], text_emb[idx]
    sims = img @ txt.T / temperature
    positives = txt @ txt.T > 0.999
    neg_inf = torch.finfo(sims.dtype).min
    i2t = -torch.logsumexp(sims.log_softmax(dim=1).masked_fill(~positives, neg_inf), dim=1)
    t2i = -torch.logsumexp(sims.log_softmax(dim=0).masked_fill(~positives, neg_inf), dim=0)
    return 0.5 * (i2t.mean() + t2i.mean())
