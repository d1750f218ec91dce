"""LowResolutionLabelLoss against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from mixsup_monai.methods.lsr import LabelStatsTable, LowResolutionLabelLoss


@pytest.fixture
def table():
    return LabelStatsTable(
        classes=["non-tumour", "tumour"],
        z_values=[0, 1],
        mean=[[0.9, 0.1], [0.25, 0.75]],
        std=[[0.05, 0.05], [0.1, 0.1]],
    )


def test_uniform_prediction_costs_log2(table):
    # p = (0.5, 0.5) everywhere; CE = -(0.25 ln 0.5 + 0.75 ln 0.5) = ln 2
    loss = LowResolutionLabelLoss(table)(torch.zeros(1, 2, 2, 2), torch.tensor([1]))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_value_per_block_and_reductions(table):
    logits = torch.zeros(2, 2, 1, 1)
    logits[0, 0] = math.log(3.0)  # block 0: p = (0.75, 0.25), z = 1 -> -(0.25 ln .75 + .75 ln .25) = 1.111642
    # block 1: p = (0.5, 0.5), z = 0 -> ln 2 = 0.693147
    z = torch.tensor([1, 0])
    per_block = LowResolutionLabelLoss(table, reduction="none")(logits, z)
    assert per_block.tolist() == pytest.approx([1.111642, 0.693147], abs=1e-5)
    assert LowResolutionLabelLoss(table, reduction="sum")(logits, z).item() == pytest.approx(1.804789, abs=1e-5)
    assert LowResolutionLabelLoss(table)(logits, z).item() == pytest.approx(0.902394, abs=1e-5)


def test_minimum_at_the_table_mean(table):
    logits = torch.zeros(1, 2, 1, 1, requires_grad=True)
    optimiser = torch.optim.SGD([logits], lr=1.0)
    loss_fn = LowResolutionLabelLoss(table)
    for _ in range(300):
        optimiser.zero_grad()
        loss_fn(logits, torch.tensor([1])).backward()
        optimiser.step()
    assert torch.softmax(logits, 1)[0, :, 0, 0].tolist() == pytest.approx([0.25, 0.75], abs=1e-3)


def test_rejects_unknown_z_and_wrong_channels(table):
    with pytest.raises(ValueError, match=r"z = \[5\] have no row"):
        LowResolutionLabelLoss(table)(torch.zeros(1, 2, 2, 2), torch.tensor([5]))
    with pytest.raises(ValueError, match=r"expected input \(B, 2, H, W\)"):
        LowResolutionLabelLoss(table)(torch.zeros(1, 3, 2, 2), torch.tensor([0]))
