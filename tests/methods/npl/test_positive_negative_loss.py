"""PositiveNegativeLoss: positive CE + multi-negative loss over mixed NPL batches, hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from mixsup_monai.methods.npl import NPLTargetd, PositiveNegativeLoss, positive_negative_loss

# 3 patches, C = 4, uniform logits (f = 1/4 everywhere):
#   0: supervised class 2            -> CE = log 4
#   1: negatives "not 0", "not 3"    -> -((4 - 2) / 3) * 2 * log(3/4) = -(4/3) log 0.75
#   2: positive class 1 + "not 0"    -> CE = log 4, negative -((4 - 1) / 3) * log(3/4) = -log 0.75
LOGITS = torch.zeros(3, 4)
TARGET = torch.tensor([[2, 0, 0, 0, 0], [-1, 1, 0, 0, 1], [1, 1, 0, 0, 0]], dtype=torch.float32)
CE = math.log(4)
NEG1 = -(4 / 3) * math.log(0.75)
NEG2 = -math.log(0.75)


def test_per_patch_terms():
    ce, neg = positive_negative_loss(LOGITS, TARGET)
    torch.testing.assert_close(ce, torch.tensor([CE, 0.0, CE]))
    torch.testing.assert_close(neg, torch.tensor([0.0, NEG1, NEG2]))


REDUCTIONS = [
    ("mean_over_labelled_patches_of_each_kind", "mean", 0.5, (2 * CE) / 2 + 0.5 * (NEG1 + NEG2) / 2),
    ("sum", "sum", 1.0, 2 * CE + NEG1 + NEG2),
]


@pytest.mark.parametrize("name, reduction, weight, expected", REDUCTIONS, ids=[c[0] for c in REDUCTIONS])
def test_reductions(name, reduction, weight, expected):
    loss = PositiveNegativeLoss(negative_weight=weight, reduction=reduction)
    assert float(loss(LOGITS, TARGET)) == pytest.approx(expected, rel=1e-5)


def test_none_reduction_and_gradient_pushes_negated_class_down():
    logits = torch.zeros(1, 4, requires_grad=True)
    loss = PositiveNegativeLoss(reduction="none")(logits, torch.tensor([[-1, 0, 0, 0, 1.0]]))
    assert loss.shape == (1,)
    loss.sum().backward()
    assert logits.grad[0, 3] > 0 and (logits.grad[0, :3] < 0).all()  # descent lowers "not 3", raises the rest


def test_batch_without_any_label_gives_zero():
    assert float(PositiveNegativeLoss()(torch.randn(2, 3), torch.tensor([[-1.0, 0, 0, 0]] * 2))) == 0.0


BAD = [
    ("target_width", torch.zeros(2, 3), torch.zeros(2, 3), r"target must have shape \(B, 1 \+ C\) = \(2, 4\)"),
    ("class_out_of_range", torch.zeros(1, 3), torch.tensor([[3.0, 0, 0, 0]]), r"-1 \(none\) or 0..2, got \[3\]"),
    ("logits_not_2d", torch.zeros(2, 3, 4), torch.zeros(2, 4), r"input must have shape \(B, C\)"),
]


@pytest.mark.parametrize("name, logits, target, match", BAD, ids=[c[0] for c in BAD])
def test_rejects_bad_input(name, logits, target, match):
    with pytest.raises(ValueError, match=match):
        PositiveNegativeLoss()(logits, target)


def test_rejects_negative_weight():
    with pytest.raises(ValueError, match="negative_weight must be >= 0, got -1"):
        PositiveNegativeLoss(negative_weight=-1)


def test_target_transform_mixes_pools_into_one_format():
    t = NPLTargetd(num_classes=4)
    assert t({"label": 2})["label"].tolist() == [2, 0, 0, 0, 0]
    neg = t({"negative": [True, False, False, True]})
    assert neg["label"].tolist() == [-1, 1, 0, 0, 1] and "negative" not in neg
    with pytest.raises(ValueError, match=r"class 4 is not in 0..3"):
        t({"label": 4, "location": [0, 0]})
    with pytest.raises(ValueError, match="negative labels have 3 entries, expected 4"):
        t({"negative": [True, False, False]})
