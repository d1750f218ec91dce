"""NPL training loss over mixed pools: positive cross-entropy plus the multi-negative loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import LossReduction, look_up_option
from torch.nn.modules.loss import _Loss

from mixsup_monai.methods.npl.multi_negative_loss import multi_negative_loss

__all__ = ["positive_negative_loss", "PositiveNegativeLoss"]


def _split(input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if input.ndim != 2 or input.shape[1] < 2:
        raise ValueError(f"input must have shape (B, C) logits with C >= 2, got {tuple(input.shape)}")
    if target.ndim != 2 or target.shape != (input.shape[0], 1 + input.shape[1]):
        raise ValueError(
            f"target must have shape (B, 1 + C) = {(input.shape[0], 1 + input.shape[1])} ([class or -1, "
            f"not-class multi-hot], see NPLTargetd), got {tuple(target.shape)}"
        )
    positive = target[:, 0].round().long()
    if bool((positive >= input.shape[1]).any()) or bool((positive < -1).any()):
        raise ValueError(f"positive labels must be -1 (none) or 0..{input.shape[1] - 1}, got {positive.tolist()}")
    return positive, target[:, 1:]


def positive_negative_loss(
    input: torch.Tensor, target: torch.Tensor, negative_weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch positive cross-entropy (Tokunaga et al., Eq. 6) and multi-negative loss (Eq. 4, corrected).

    Args:
        input: ``(B, C)`` logits.
        target: ``(B, 1 + C)``: column 0 the class index (-1 = no positive label), columns 1.. the
            multi-hot negative labels ("not c", accumulated over rounds).
        negative_weight: factor of the multi-negative loss.

    Returns:
        ``(positive, negative)``, each ``(B,)``: the CE of patches with a class (0 elsewhere) and
        ``negative_weight`` times the multi-negative loss of patches with negative labels (0 elsewhere).
    """
    positive, negative = _split(input, target)
    has = positive >= 0
    ce = torch.zeros(input.shape[0], dtype=input.dtype, device=input.device)
    if bool(has.any()):
        ce = ce.masked_scatter(has, F.cross_entropy(input[has], positive[has], reduction="none"))
    return ce, negative_weight * multi_negative_loss(input, negative)


class PositiveNegativeLoss(_Loss):
    """Loss of an NPL batch mixing supervised, positive and negative pseudo-labelled patches.

    ``L = mean_{patches with a class} CE + negative_weight · mean_{patches with negatives} L_multi-negative``

    where ``L_multi-negative = -((C - |y|)/(C - 1)) Σ_c y_c log(1 - f(c|x))`` (Tokunaga et al., Eq. 4, with
    the paper's ``log(1 - log f)`` corrected to ``log(1 - f)``; METHODS.md §3). Each mean is over the
    patches that carry that kind of label (0 when none does), so the balance of the two terms does not
    depend on how the batch is mixed.

    Args:
        negative_weight: factor of the negative term.
        reduction: ``"mean"`` (above), ``"sum"`` (sums instead of means) or ``"none"`` (``(B,)`` per patch).

    Shapes:
        input ``(B, C)`` logits; target ``(B, 1 + C)`` from :class:`~mixsup_monai.methods.npl.NPLTargetd`.
    """

    def __init__(self, negative_weight: float = 1.0, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=look_up_option(reduction, LossReduction).value)
        if float(negative_weight) < 0:
            raise ValueError(f"negative_weight must be >= 0, got {negative_weight}")
        self.negative_weight = float(negative_weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce, neg = positive_negative_loss(input, target, self.negative_weight)
        if self.reduction == LossReduction.NONE.value:
            return ce + neg
        if self.reduction == LossReduction.SUM.value:
            return ce.sum() + neg.sum()
        n_pos = int((target[:, 0] >= 0).sum())
        n_neg = int((target[:, 1:] > 0).any(dim=1).sum())
        return ce.sum() / max(n_pos, 1) + neg.sum() / max(n_neg, 1)
