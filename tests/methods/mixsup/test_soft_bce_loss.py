"""Tests of the pixel-wise soft-label BCE (MixSup M-step loss)."""

from __future__ import annotations

import math

import pytest
import torch

from mixsup_monai.methods.mixsup.soft_bce_loss import SoftBCEWithLogitsLoss, soft_bce_with_logits

LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75

# (name, logit, target, expected loss) -- single pixel, hand-computed
VALUE_CASES = [
    ("logit_0_target_half_is_log2", 0.0, 0.5, 0.6931472),
    # -(0.25 ln 0.75 + 0.75 ln 0.25) = 0.0719205 + 1.0397208
    ("soft_target_quarter", LN3, 0.25, 1.1116413),
    # target = sigmoid(logit): entropy of Bernoulli(0.75) = -(0.75 ln 0.75 + 0.25 ln 0.25)
    ("target_equals_prediction", LN3, 0.75, 0.5623351),
    ("hard_negative_target_zero", LN3, 0.0, 1.3862944),  # -ln 0.25
    ("hard_positive_target_one", LN3, 1.0, 0.2876821),  # -ln 0.75
]


@pytest.mark.parametrize("name,logit,target,expected", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_hand_computed_values(name, logit, target, expected):
    loss = SoftBCEWithLogitsLoss()(torch.full((1, 1, 1, 1), logit), torch.full((1, 1, 1, 1), target))
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_gradient_vanishes_where_prediction_equals_soft_target():
    x = torch.full((1, 1, 2, 2), LN3, dtype=torch.float64, requires_grad=True)
    SoftBCEWithLogitsLoss()(x, torch.full((1, 1, 2, 2), 0.75, dtype=torch.float64)).backward()
    assert torch.allclose(x.grad, torch.zeros_like(x.grad), atol=1e-12)


def test_mean_sum_none_reductions():
    x = torch.tensor([[[[0.0, LN3]]]])
    y = torch.tensor([[[[0.5, 1.0]]]])
    # element losses ln 2 = 0.6931472 and -ln 0.75 = 0.2876821
    assert float(SoftBCEWithLogitsLoss(reduction="sum")(x, y)) == pytest.approx(0.9808293, abs=1e-6)
    assert float(SoftBCEWithLogitsLoss(reduction="mean")(x, y)) == pytest.approx(0.4904146, abs=1e-6)
    none = SoftBCEWithLogitsLoss(reduction="none")(x, y)
    torch.testing.assert_close(none, torch.tensor([[[[0.6931472, 0.2876821]]]]))


def test_pos_weight_scales_positive_term_only():
    # logit 0, target 1: 2 * ln 2; target 0.5: (2 * 0.5 + 0.5) * ln 2 = 1.5 ln 2
    loss = SoftBCEWithLogitsLoss(pos_weight=2.0, reduction="none")
    out = loss(torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 0.5]]]]))
    torch.testing.assert_close(out, torch.tensor([[[[1.3862944, 1.0397208]]]]))
    per_channel = SoftBCEWithLogitsLoss(pos_weight=[1.0, 3.0], reduction="none")
    out = per_channel(torch.zeros(1, 2, 1, 1), torch.ones(1, 2, 1, 1))
    torch.testing.assert_close(out.reshape(-1), torch.tensor([0.6931472, 2.0794415]))


def test_ignore_value_and_mask_exclude_pixels_from_mean():
    x = torch.tensor([[[[0.0, LN3, 5.0]]]])
    y = torch.tensor([[[[0.5, 1.0, 255.0]]]])
    # 255 ignored: mean of ln 2 and -ln 0.75
    assert float(SoftBCEWithLogitsLoss(ignore_value=255)(x, y)) == pytest.approx(0.4904146, abs=1e-6)
    mask = torch.tensor([[[[1, 0, 0]]]])
    assert float(SoftBCEWithLogitsLoss(ignore_value=255)(x, y, mask=mask)) == pytest.approx(0.6931472, abs=1e-6)
    none = SoftBCEWithLogitsLoss(ignore_value=255, reduction="none")(x, y)
    assert float(none[0, 0, 0, 2]) == 0.0


def test_all_ignored_gives_zero_with_gradient():
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)
    loss = SoftBCEWithLogitsLoss()(x, torch.zeros(1, 1, 2, 2), mask=torch.zeros(1, 1, 2, 2))
    loss.backward()
    assert float(loss.detach()) == 0.0 and x.grad is not None


def test_function_matches_torch_on_hard_labels():
    x = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    y = (torch.rand(2, 1, 3, 3, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    ref = torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")
    torch.testing.assert_close(soft_bce_with_logits(x, y), ref)


BAD_CASES = [
    (
        "target_above_one",
        torch.full((1, 1, 2, 2), 1.5),
        r"probabilities in \[0, 1\], got values in \[1\.5, 1\.5\]",
    ),
    ("target_negative", torch.full((1, 1, 2, 2), -0.2), r"got values in \[-0\.2, -0\.2\]"),
    ("unknown_255_without_ignore_value", torch.full((1, 1, 2, 2), 255.0), r"\[255, 255\].*ignore_value"),
    ("shape_mismatch", torch.zeros(1, 1, 2, 3), r"same shape.*\(1, 1, 2, 2\) and \(1, 1, 2, 3\)"),
]


@pytest.mark.parametrize("name,target,match", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_rejects_bad_targets(name, target, match):
    with pytest.raises(ValueError, match=match):
        SoftBCEWithLogitsLoss()(torch.zeros(1, 1, 2, 2), target)


def test_rejects_bad_options():
    with pytest.raises(ValueError, match="pos_weight must be positive"):
        SoftBCEWithLogitsLoss(pos_weight=0.0)
    with pytest.raises(ValueError, match="pos_weight has 3 values but input has 2 channels"):
        SoftBCEWithLogitsLoss(pos_weight=[1.0, 2.0, 3.0])(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1))
    with pytest.raises(ValueError, match="mean"):
        SoftBCEWithLogitsLoss(reduction="avg")
    with pytest.raises(ValueError, match=r"mask must have shape"):
        SoftBCEWithLogitsLoss()(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), mask=torch.ones(2, 2))
