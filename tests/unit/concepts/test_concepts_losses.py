from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from radalign.concepts_training.losses import UncertaintyPolicy, concept_loss, contrastive_loss

NAN = float("nan")


def test_unknown_labels_are_masked() -> None:
    labels = torch.tensor([[1.0, NAN, 0.0]])
    a = concept_loss(torch.tensor([[2.0, 5.0, -1.0]]), labels)
    b = concept_loss(torch.tensor([[2.0, -9.0, -1.0]]), labels)  # only the unknown logit changed
    assert torch.isclose(a, b)
    expected = (F.softplus(torch.tensor(-2.0)) + F.softplus(torch.tensor(-1.0))) / 2
    assert torch.isclose(a, expected)


def test_uncertain_policies() -> None:
    logits = torch.tensor([[0.5, 3.0]])
    labels = torch.tensor([[1.0, -1.0]])
    ignore = concept_loss(logits, labels, policy=UncertaintyPolicy.IGNORE)
    zeros = concept_loss(logits, labels, policy=UncertaintyPolicy.ZEROS)
    ones = concept_loss(logits, labels, policy=UncertaintyPolicy.ONES)
    assert torch.isclose(ignore, F.softplus(torch.tensor(-0.5)))
    assert torch.isclose(zeros, (F.softplus(torch.tensor(-0.5)) + F.softplus(torch.tensor(3.0))) / 2)
    assert torch.isclose(ones, (F.softplus(torch.tensor(-0.5)) + F.softplus(torch.tensor(-3.0))) / 2)
    # the uncertain logit gets no gradient under U-Ignore
    x = logits.clone().requires_grad_(True)
    concept_loss(x, labels).backward()
    assert x.grad[0, 1] == 0 and x.grad[0, 0] != 0


def test_anchor_policy_pulls_uncertain_labels_toward_the_uncertain_anchor() -> None:
    logits = torch.tensor([[0.5, 3.0]])
    labels = torch.tensor([[1.0, -1.0]])
    state = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]])
    loss = concept_loss(logits, labels, policy=UncertaintyPolicy.ANCHOR, state_logits=state)
    expected = F.softplus(torch.tensor(-0.5)) + F.cross_entropy(state[0, 1:2], torch.tensor([2]))
    assert torch.isclose(loss, expected)
    with pytest.raises(ValueError):
        concept_loss(logits, labels, policy=UncertaintyPolicy.ANCHOR)


def test_all_masked_gives_zero_not_nan() -> None:
    assert concept_loss(torch.zeros(2, 3), torch.full((2, 3), NAN)).item() == 0.0


def test_contrastive_loss_rewards_alignment_and_skips_rows_without_report() -> None:
    torch.manual_seed(0)
    text = F.normalize(torch.randn(6, 384), dim=-1)
    has = torch.tensor([True, True, True, True, True, False])
    aligned = contrastive_loss(text.clone(), text, has)
    shuffled = contrastive_loss(text[torch.tensor([1, 2, 3, 4, 0, 5])], text, has)
    assert aligned < shuffled
    # the row without a report cannot change the loss
    other = text.clone()
    other[5] = F.normalize(torch.randn(384), dim=-1)
    assert torch.isclose(contrastive_loss(other, text, has), aligned)


def test_identical_reports_are_positives_not_negatives() -> None:
    torch.manual_seed(1)
    base = torch.randn(384)
    # two similar reports (cosine ~0.99) so the loss is well away from float32 underflow
    text = F.normalize(torch.stack([base, base + 0.1 * torch.randn(384)]), dim=-1)
    reports = torch.stack([text[0], text[0], text[1]])  # two images of one study share a report
    loss = contrastive_loss(reports.clone(), reports, torch.ones(3, dtype=torch.bool))
    # rows 0-1: -log(2e^s / (2e^s + e^t)); row 2: -log(e^s / (e^s + 2e^t)); symmetric both ways
    d = (float(text[0] @ text[1]) - 1.0) / 0.07
    expected = (2 * math.log(1 + math.exp(d) / 2) + math.log(1 + 2 * math.exp(d))) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    # a duplicate treated as a negative would cost at least log(2) per row
    assert loss.item() < math.log(2)
