"""The low-resolution baseline of LSR: every pixel of a block trained towards its label's mean class fractions."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from mixsup_monai.methods.lsr.label_stats import LabelStatsTable, z_to_row_index

__all__ = ["LowResolutionLabelLoss", "low_resolution_targets"]


def low_resolution_targets(target_z: torch.Tensor, eta: torch.Tensor, z_values: torch.Tensor) -> torch.Tensor:
    """Per-block soft class targets ``η_{l, z}`` of the table rows of ``target_z``: ``(B,)`` -> ``(B, L)``."""
    return eta[z_to_row_index(target_z, z_values)]


class LowResolutionLabelLoss(_Loss):
    """Cross-entropy of every pixel against its block's expected class fractions ``η_{·, z}``.

    The "low-resolution model" baseline of Zhao et al. (Sec. 3.2.2, Table 4): the block label is
    up-sampled to every pixel of the block, so the network can only learn block-level evidence. With
    soft targets η (the table's mean class fractions for z) instead of a hard label, the block's
    predicted class fractions are pulled towards η, like the LSR losses, but every pixel alike.

    Args:
        label_stats: the p(c | z) table (object or JSON path).
        softmax: apply softmax to the input (logits); ``False`` when the input is already probabilities.
        reduction: ``"mean"`` over blocks, ``"sum"`` or ``"none"`` (per block).

    Shapes:
        input: ``(B, L, H, W)`` logits; target_z: ``(B,)`` int low-resolution labels.
    """

    def __init__(
        self,
        label_stats: LabelStatsTable | str | os.PathLike,
        softmax: bool = True,
        reduction: LossReduction | str = LossReduction.MEAN,
    ):
        super().__init__(reduction=LossReduction(reduction).value)
        table = label_stats if isinstance(label_stats, LabelStatsTable) else LabelStatsTable.load(label_stats)
        eta, _ = table.to_tensors()
        self.register_buffer("eta", eta)
        self.register_buffer("z_values", table.z_tensor())
        self.softmax = softmax

    def forward(self, input: torch.Tensor, target_z: torch.Tensor | Sequence[int]) -> torch.Tensor:
        if input.ndim != 4 or input.shape[1] != self.eta.shape[1]:
            raise ValueError(
                f"LowResolutionLabelLoss: expected input (B, {self.eta.shape[1]}, H, W), got {tuple(input.shape)}"
            )
        target_z = torch.as_tensor(target_z, device=input.device).reshape(-1)
        targets = low_resolution_targets(target_z, self.eta, self.z_values).to(input.dtype)
        log_p = torch.log_softmax(input, dim=1) if self.softmax else torch.log(input.clamp_min(1e-8))
        per_block = -(targets[:, :, None, None] * log_p).sum(1).mean((1, 2))
        if self.reduction == LossReduction.MEAN.value:
            return per_block.mean()
        if self.reduction == LossReduction.SUM.value:
            return per_block.sum()
        return per_block
