"""Tests of the NPL multi-negative loss -((C - |y|)/(C - 1)) Σ y_c log(1 - f(c|x))."""

from __future__ import annotations

import math

import pytest
import torch

from mixsup_monai.methods.npl.multi_negative_loss import MultiNegativeLoss, log_one_minus_softmax, multi_negative_loss

PROBS = [0.5, 0.3, 0.2]
LOG_PROBS = [math.log(p) for p in PROBS]  # logits whose softmax is PROBS

# (name, input, negative labels, softmax, expected per-patch loss), hand-computed
VALUE_CASES = [
    # C = 5 uniform, "not 3": weight (5-1)/4 = 1, -ln(1 - 0.2) = 0.2231436
    ("single_negative_uniform_logits", [0.0] * 5, [0, 0, 0, 1, 0], True, 0.2231436),
    # two negatives: weight (5-2)/4 = 0.75, 0.75 * 2 * 0.2231436
    ("two_negatives_weighted", [0.0] * 5, [1, 0, 0, 1, 0], True, 0.3347153),
    # C = 3, "not 0", "not 2": weight (3-2)/2 = 0.5, 0.5 * (-ln 0.5 - ln 0.8) = 0.5 * (0.6931472 + 0.2231436)
    ("probabilities_input", PROBS, [1, 0, 1], False, 0.4581454),
    ("same_patch_as_logits", LOG_PROBS, [1, 0, 1], True, 0.4581454),
    # every class negated: weight (3-3)/2 = 0
    ("all_classes_negated_weight_zero", PROBS, [1, 1, 1], False, 0.0),
    ("no_negative_label_contributes_nothing", PROBS, [0, 0, 0], False, 0.0),
]


@pytest.mark.parametrize("name,x,y,softmax,expected", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_hand_computed_values(name, x, y, softmax, expected):
    loss = MultiNegativeLoss(softmax=softmax, reduction="none")(torch.tensor([x]), torch.tensor([y]))
    assert loss.shape == (1,)
    assert float(loss[0]) == pytest.approx(expected, abs=1e-6)


def test_mean_is_over_patches_with_a_negative_label():
    x = torch.zeros(3, 4)  # uniform: f = 0.25, -ln 0.75 = 0.2876821
    y = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    # patch 0: 0.2876821; patch 1: (4-2)/3 * 2 * 0.2876821 = 0.3835761; patch 2: no label
    torch.testing.assert_close(MultiNegativeLoss(reduction="none")(x, y), torch.tensor([0.2876821, 0.3835761, 0.0]))
    assert float(MultiNegativeLoss(reduction="sum")(x, y)) == pytest.approx(0.6712582, abs=1e-6)
    assert float(MultiNegativeLoss()(x, y)) == pytest.approx(0.3356291, abs=1e-6)  # / 2, not / 3


def test_no_labelled_patch_gives_zero_with_gradient():
    x = torch.zeros(2, 3, requires_grad=True)
    loss = MultiNegativeLoss()(x, torch.zeros(2, 3))
    loss.backward()
    assert float(loss.detach()) == 0.0 and x.grad is not None


STABILITY_CASES = [
    # log(1 - f0) = ln 2 - logsumexp(100, 0, 0) -> loss 100 - ln 2
    ("float32_three_classes", [100.0, 0.0, 0.0], 99.3068528),
    ("float32_saturated", [1000.0, 0.0], 1000.0),
]


@pytest.mark.parametrize("name,x,expected", STABILITY_CASES, ids=[c[0] for c in STABILITY_CASES])
def test_stable_when_probability_of_negated_class_is_one(name, x, expected):
    logits = torch.tensor([x], requires_grad=True)
    y = torch.zeros(1, len(x))
    y[0, 0] = 1
    assert torch.isinf(torch.log1p(-torch.softmax(logits.detach(), dim=1)[0, 0]))  # the naive form fails
    loss = MultiNegativeLoss()(logits, y)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    assert torch.isfinite(logits.grad).all()


def test_log_one_minus_softmax_hand_values():
    # softmax([0, ln 3]) = [0.25, 0.75]: log(0.75), log(0.25)
    out = log_one_minus_softmax(torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([[-0.2876821, -1.3862944]], dtype=torch.float64), atol=1e-7, rtol=0)


def test_gradient_matches_finite_differences():
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = torch.tensor([[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: multi_negative_loss(z, y), (x,))


BAD_CASES = [
    ("shape_mismatch", torch.zeros(2, 3), torch.zeros(2, 4), True, r"shape of input \(2, 3\), got \(2, 4\)"),
    ("single_class", torch.zeros(2, 1), torch.zeros(2, 1), True, r"C >= 2 classes"),
    ("not_two_dimensional", torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), True, r"\(B, C\)"),
    (
        "labels_not_binary",
        torch.zeros(1, 3),
        torch.tensor([[0.0, 2.0, 0.5]]),
        True,
        r"multi-hot 0/1.*0\.5, 2\.0",
    ),
    (
        "probabilities_out_of_range",
        torch.tensor([[1.5, -0.5]]),
        torch.tensor([[1, 0]]),
        False,
        r"\[-0\.5, 1\.5\]",
    ),
]


@pytest.mark.parametrize("name,x,y,softmax,match", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_rejects_bad_input(name, x, y, softmax, match):
    with pytest.raises(ValueError, match=match):
        MultiNegativeLoss(softmax=softmax)(x, y)


def test_rejects_bad_options():
    with pytest.raises(ValueError, match="mean"):
        MultiNegativeLoss(reduction="average")
    with pytest.raises(ValueError, match=r"eps must lie in \(0, 1\)"):
        MultiNegativeLoss(eps=0.0)
