"""Tests of the label super-resolution losses against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mixsup_monai.methods.lsr import LabelSuperResolutionLoss, lsr_distance
from mixsup_monai.methods.lsr.label_stats import LabelStatsTable

# Two 2x2 blocks, two classes, given as probabilities (softmax=False). Class 1 probabilities:
#   block A: [[0.5, 0.5], [1.0, 0.0]] -> mu_1 = 0.5, sigma2_1 = (0.25 + 0.25 + 0 + 0) / 4 = 0.125
#   block B: [[0.2, 0.2], [0.2, 0.2]] -> mu_1 = 0.2, sigma2_1 = 0.2 * 0.8 = 0.16
# Class 0 = 1 - class 1: mu_0 = 0.5 / 0.8, same sigma2 (p(1-p) is symmetric).
P_A = [[0.5, 0.5], [1.0, 0.0]]
P_B = [[0.2, 0.2], [0.2, 0.2]]

# Table: z = 0 -> eta = (0.6, 0.4), rho = 0.1;  z = 1 -> eta = (0.9, 0.1), rho = 0.05.
TABLE = LabelStatsTable(
    classes=("background", "tumour"),
    z_values=(0, 1),
    mean=[[0.6, 0.4], [0.9, 0.1]],
    std=[[0.1, 0.1], [0.05, 0.05]],
)
LN = math.log
PI = math.pi


def probs(*blocks):
    p1 = torch.tensor(blocks, dtype=torch.float64)
    return torch.stack([1.0 - p1, p1], dim=1)  # (B, 2, 2, 2)


# Hand-computed values (eps = 0). Per class D = 1/2 ln(2 pi s2) + (tau2 + (eta - mu)^2) / (2 s2);
# both classes give the same D here, hence the factors 2 folded into the logs' coefficients.
# intra, A (z=0): s2 = .125, (eta-mu)^2 = .01, tau2 = .01 -> 2 * D = ln(.25 pi) + .02 / .125
# intra, B (z=0): s2 = .16,  (eta-mu)^2 = .04              -> 2 * D = ln(.32 pi) + .05 / .16
INTRA_CE = (LN(0.25 * PI) + 0.16 + LN(0.32 * PI) + 0.3125) / 2
# inter, group {A, B}: mu_1 = .35, var_k mu = ((.15)^2 + (.15)^2) / 2 = .0225, (eta-mu)^2 = .0025
INTER_CE = LN(0.045 * PI) + 2 * (0.01 + 0.0025) / 0.045
# intra+inter: s2 = mean sigma2 + var_k mu = (.125 + .16) / 2 + .0225 = .165
#   (Eq. 11: mean sigma2 + mean mu^2 - mu_z^2 = .1425 + (.25 + .04) / 2 - .35^2 = .165)
INTRA_INTER_CE = LN(0.33 * PI) + 2 * (0.01 + 0.0025) / 0.33
# one-sided, intra: s2 + tau2 = .135 (A), .17 (B); D = 1/2 ln(2 pi (s2 + tau2)) + (eta-mu)^2 / (2 (s2 + tau2))
INTRA_ONE_SIDED = (LN(0.27 * PI) + 0.01 / 0.135 + LN(0.34 * PI) + 0.04 / 0.17) / 2
# interval, intra: A: relu(.1 - .1) = 0 -> ln(.125 + .03); B: relu(.2 - .1)^2 / (.16 + .01) + ln(.16 + .03)
INTRA_INTERVAL = (2 * LN(0.155) + 2 * (0.01 / 0.17 + LN(0.19))) / 2
# Eq. 14 variance: sigma2 / |X| = sigma2 / 4 -> A: .03125, B: .04
INTRA_EQ14 = (LN(0.0625 * PI) + 2 * 0.02 / 0.0625 + LN(0.08 * PI) + 2 * 0.05 / 0.08) / 2
# alpha = 0.5: tau2 = .0025
INTRA_ALPHA_HALF = (LN(0.25 * PI) + 2 * 0.0125 / 0.25 + LN(0.32 * PI) + 2 * 0.0425 / 0.32) / 2
# inter with intra_inter on two groups {A, B} and {A, A} (group_ids): mean of the two group terms
TWO_GROUPS_INTRA_INTER = (INTRA_INTER_CE + LN(0.25 * PI) + 0.16) / 2


@pytest.mark.parametrize(
    ("case", "kwargs", "expected"),
    [
        ("intra_cross_entropy", {"formulation": "intra"}, INTRA_CE),
        ("inter_cross_entropy", {"formulation": "inter"}, INTER_CE),
        ("intra_inter_cross_entropy", {"formulation": "intra_inter"}, INTRA_INTER_CE),
        ("intra_one_sided", {"formulation": "intra", "distance": "one_sided"}, INTRA_ONE_SIDED),
        ("intra_interval", {"formulation": "intra", "distance": "interval"}, INTRA_INTERVAL),
        ("intra_eq14_variance", {"formulation": "intra", "variance": "mean_of_independent"}, INTRA_EQ14),
        ("intra_alpha_half", {"formulation": "intra", "alpha": 0.5}, INTRA_ALPHA_HALF),
    ],
)
def test_matches_hand_computed_value(case, kwargs, expected):
    loss = LabelSuperResolutionLoss(TABLE, softmax=False, eps=0.0, **kwargs)
    value = loss(probs(P_A, P_B), torch.tensor([0, 0]))
    assert value.item() == pytest.approx(expected, rel=1e-6), case


def test_reduction_none_and_sum_give_per_block_values():
    kwargs = {"formulation": "intra", "softmax": False, "eps": 0.0}
    per_block = LabelSuperResolutionLoss(TABLE, reduction="none", **kwargs)(probs(P_A, P_B), torch.tensor([0, 0]))
    expected = [LN(0.25 * PI) + 0.16, LN(0.32 * PI) + 0.3125]
    assert per_block.shape == (2,)
    np.testing.assert_allclose(per_block.numpy(), expected, rtol=1e-6)
    total = LabelSuperResolutionLoss(TABLE, reduction="sum", **kwargs)(probs(P_A, P_B), torch.tensor([0, 0]))
    assert total.item() == pytest.approx(sum(expected), rel=1e-6)


def test_group_ids_override_grouping_by_z():
    loss = LabelSuperResolutionLoss(TABLE, formulation="intra_inter", softmax=False, eps=0.0)
    x = probs(P_A, P_B, P_A, P_A)
    z = torch.tensor([0, 0, 0, 0])
    value = loss(x, z, group_ids=torch.tensor([0, 0, 1, 1]))
    assert value.item() == pytest.approx(TWO_GROUPS_INTRA_INTER, rel=1e-6)
    assert loss(x, z).item() != pytest.approx(TWO_GROUPS_INTRA_INTER, rel=1e-3)  # one group of four


def test_rho_floor_replaces_zero_rho():
    zero_rho = LabelStatsTable(classes=("bg", "t"), z_values=(3,), mean=[[0.6, 0.4]], std=[[0.0, 0.0]])
    loss = LabelSuperResolutionLoss(zero_rho, formulation="intra", rho_floor=0.1, softmax=False, eps=0.0)
    assert loss(probs(P_A, P_B), torch.tensor([3, 3])).item() == pytest.approx(INTRA_CE, rel=1e-6)


@pytest.mark.parametrize("formulation", ["intra", "inter", "intra_inter"])
@pytest.mark.parametrize("distance", ["cross_entropy", "one_sided", "interval"])
def test_zero_rho_table_gives_finite_loss_and_gradients(formulation, distance):
    # Table 1 row 0-20 % is 0.0 +- 0.1 %: a row with rho = 0, and saturated predictions (sigma2 = 0)
    table = LabelStatsTable(classes=("bg", "t"), z_values=(0,), mean=[[1.0, 0.0]], std=[[0.0, 0.0]])
    loss = LabelSuperResolutionLoss(table, formulation=formulation, distance=distance)
    logits = torch.zeros(4, 2, 3, 3)
    logits[:, 0] = 30.0  # p(background) = 1 - 1e-13
    logits[1, 1, 0, 0] = 60.0  # one confident tumour pixel
    logits.requires_grad_(True)
    value = loss(logits, torch.zeros(4, dtype=torch.long))
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()


def test_zero_rho_table_hand_value():
    # rho = 0: D = 1/2 ln(2 pi s2) + (eta - mu)^2 / (2 s2);
    # block A against eta = (.6, .4): 2 * D = ln(.25 pi) + .02 / .25 = ln(.25 pi) + .08
    table = LabelStatsTable(classes=("bg", "t"), z_values=(0,), mean=[[0.6, 0.4]], std=[[0.0, 0.0]])
    loss = LabelSuperResolutionLoss(table, formulation="intra", softmax=False, eps=0.0)
    assert loss(probs(P_A), torch.tensor([0])).item() == pytest.approx(LN(0.25 * PI) + 0.08, rel=1e-6)


def test_inter_group_of_one_falls_back_to_own_variance_with_warning():
    loss = LabelSuperResolutionLoss(TABLE, formulation="inter", softmax=False, eps=0.0)
    with pytest.warns(UserWarning, match="a group of a single block"):
        value = loss(probs(P_A, P_B), torch.tensor([0, 1]))
    # each group is one block: its intra-instance term. B against z = 1: eta = (.9, .1), tau2 = .0025,
    # (eta - mu)^2 = .01 -> 2 * D = ln(.32 pi) + 2 * .0125 / .32
    expected = (LN(0.25 * PI) + 0.16 + LN(0.32 * PI) + 2 * 0.0125 / 0.32) / 2
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_inter_group_of_one_can_be_skipped():
    loss = LabelSuperResolutionLoss(TABLE, formulation="inter", softmax=False, eps=0.0, singleton_groups="skip")
    with pytest.warns(UserWarning, match="singleton_groups='skip'"):
        value = loss(probs(P_A, P_B, P_A), torch.tensor([0, 0, 1]))
    assert value.item() == pytest.approx(INTER_CE, rel=1e-6)
    x = probs(P_A, P_B).requires_grad_(True)
    with pytest.warns(UserWarning):
        empty = loss(x, torch.tensor([0, 1]))
    empty.backward()
    assert empty.item() == 0.0 and torch.count_nonzero(x.grad) == 0


def test_intra_inter_group_of_one_is_the_intra_term():
    loss = LabelSuperResolutionLoss(TABLE, formulation="intra_inter", softmax=False, eps=0.0)
    assert loss(probs(P_A), torch.tensor([0])).item() == pytest.approx(LN(0.25 * PI) + 0.16, rel=1e-6)


def test_rejects_group_mixing_z():
    loss = LabelSuperResolutionLoss(TABLE, formulation="intra_inter", softmax=False)
    with pytest.raises(ValueError, match=r"group_ids: group 7 mixes low-resolution labels z = \[0, 1\]"):
        loss(probs(P_A, P_B), torch.tensor([0, 1]), group_ids=torch.tensor([7, 7]))


def test_rejects_unknown_z():
    loss = LabelSuperResolutionLoss(TABLE, formulation="intra")
    with pytest.raises(ValueError, match=r"z = \[5\] have no row in .*its z values are \[0, 1\]"):
        loss(torch.zeros(2, 2, 2, 2), torch.tensor([0, 5]))


@pytest.mark.parametrize(
    ("case", "call", "pattern"),
    [
        (
            "wrong_channels",
            lambda f: f(torch.zeros(2, 3, 2, 2), torch.tensor([0, 0])),
            "input has 3 channels",
        ),
        (
            "wrong_z_shape",
            lambda f: f(torch.zeros(2, 2, 2, 2), torch.tensor([0, 0, 0])),
            "target_z has shape",
        ),
        ("float_z", lambda f: f(torch.zeros(2, 2, 2, 2), torch.tensor([0.5, 0.0])), "expected integer"),
    ],
)
def test_rejects_bad_shapes(case, call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(LabelSuperResolutionLoss(TABLE))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"formulation": "intra_intr"}, "intra_intr"),
        ({"distance": "kl"}, "kl"),
        ({"alpha": -1.0}, r"alpha = -1.0: expected a finite number >= 0"),
    ],
)
def test_rejects_bad_options(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        LabelSuperResolutionLoss(TABLE, **kwargs)


@pytest.mark.parametrize("formulation", ["intra", "inter", "intra_inter"])
def test_gradients_flow_through_softmax(formulation):
    torch.manual_seed(0)
    logits = torch.randn(6, 2, 8, 8, requires_grad=True)
    loss = LabelSuperResolutionLoss(TABLE, formulation=formulation, alpha=0.8)
    value = loss(logits, torch.tensor([0, 0, 0, 1, 1, 1]))
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("eps", [0.0, 1e-4])
def test_cross_entropy_minimum_at_table_mean_and_variance(eps):
    eta, tau = 0.3, 0.1
    mu = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)[:, None].expand(101, 60)
    var = (torch.arange(1, 61, dtype=torch.float64) * 0.0005)[None, :].expand(101, 60) - eps  # var + eps on grid
    d = lsr_distance(mu, var, torch.full_like(mu, eta), torch.full_like(mu, tau), "cross_entropy", eps)
    i, j = np.unravel_index(int(torch.argmin(d)), d.shape)
    assert mu[i, j].item() == pytest.approx(eta)
    assert (var[i, j] + eps).item() == pytest.approx(tau**2)


def test_high_res_term_adds_weighted_pixel_cross_entropy():
    lsr_only = LabelSuperResolutionLoss(TABLE, formulation="intra", softmax=False, eps=0.0)
    loss = LabelSuperResolutionLoss(TABLE, formulation="intra", softmax=False, eps=0.0, high_res_weight=0.5)
    x, z = probs(P_A, P_B), torch.tensor([0, 0])
    # block A labelled at 3 pixels: class 1 where p1 = .5 (-ln .5) and p1 = 1 (0); class 0 where p0 = 1 (0);
    # block B unlabelled (all 255) adds nothing: mean over the 3 labelled pixels = ln 2 / 3
    target = torch.tensor([[[1, 255], [1, 0]], [[255, 255], [255, 255]]])
    assert loss(x, z, high_res_target=target).item() == pytest.approx(INTRA_CE + 0.5 * LN(2) / 3, rel=1e-6)
    unlabelled = torch.full((2, 2, 2), 255)
    assert loss(x, z, high_res_target=unlabelled).item() == pytest.approx(lsr_only(x, z).item(), rel=1e-12)
    assert loss(x, z).item() == pytest.approx(lsr_only(x, z).item(), rel=1e-12)


def test_high_res_term_rejected_with_reduction_none():
    loss = LabelSuperResolutionLoss(TABLE, high_res_weight=1.0, reduction="none")
    with pytest.raises(ValueError, match="reduction='none'"):
        loss(
            torch.zeros(2, 2, 2, 2),
            torch.tensor([0, 0]),
            high_res_target=torch.zeros(2, 2, 2, dtype=torch.long),
        )


def test_accepts_path_and_tensor_tables_and_moves_buffers(tmp_path):
    path = tmp_path / "stats.json"
    TABLE.save(path)
    x, z = probs(P_A, P_B), torch.tensor([0, 0])
    from_table = LabelSuperResolutionLoss(TABLE, softmax=False)(x, z)
    from_path = LabelSuperResolutionLoss(str(path), softmax=False)(x, z)
    eta, rho = TABLE.to_tensors()
    from_tensors = LabelSuperResolutionLoss((eta, rho, torch.tensor([0, 1])), softmax=False)
    assert from_path.item() == pytest.approx(from_table.item())
    assert from_tensors(x, z).item() == pytest.approx(from_table.item(), rel=1e-6)
    assert {"eta", "rho", "z_values"} <= set(from_tensors.state_dict())
    moved = from_tensors.to(torch.float64)
    assert moved.eta.dtype == torch.float64 and moved.z_values.dtype == torch.long
