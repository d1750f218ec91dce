"""Pixel-wise binary cross-entropy with soft (probability) targets, the MixSup M-step loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.utils import LossReduction, look_up_option
from torch.nn.modules.loss import _Loss

__all__ = ["soft_bce_with_logits", "SoftBCEWithLogitsLoss"]


def soft_bce_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Element-wise soft-label BCE on logits (Li et al., Algorithm 1, M-step loss).

    ``loss = -[w_pos * y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x))]``, computed stably from
    logits, with ``y`` a probability in [0, 1] (a MixSup ``y_p+`` value, a 0/1 pixel label or a
    hard-negative 0). Elements where ``valid`` is False are set to 0.

    Args:
        input: ``(B, C, *spatial)`` logits.
        target: same shape as ``input``, probabilities in [0, 1] (not checked here).
        valid: optional bool mask broadcastable to ``input``; False = ignored element.
        pos_weight: optional ``(C,)`` weight of the positive term, one per channel.

    Returns:
        Element-wise loss with the shape of ``input``.
    """
    if pos_weight is not None:
        pos_weight = pos_weight.to(input).reshape((-1,) + (1,) * (input.ndim - 2))
    loss = F.binary_cross_entropy_with_logits(input, target.to(input), pos_weight=pos_weight, reduction="none")
    if valid is not None:
        loss = torch.where(valid, loss, torch.zeros_like(loss))
    return loss


class SoftBCEWithLogitsLoss(_Loss):
    """Pixel-wise binary cross-entropy whose targets are probabilities (MixSup M-step loss).

    ``-1/N Σ y log P + (1 - y) log(1 - P)`` over pixel labels ``y_p``, re-weighted pseudo labels
    ``y_p+`` and hard negatives ``y_p-`` (Li et al., Algorithm 1, M-step; METHODS.md §1). Unlike
    :class:`torch.nn.BCEWithLogitsLoss`, targets are validated to lie in [0, 1] and pixels can be
    ignored, by a mask and/or a sentinel target value.

    Args:
        pos_weight: weight of the positive term, a float or one value per channel ``(C,)``.
        ignore_value: target value marking ignored pixels (e.g. 255 for "unknown"); ``None`` = none.
        reduction: ``"mean"`` (over the non-ignored elements; 0 when all are ignored), ``"sum"``
            or ``"none"`` (element-wise, ignored elements 0).
        validate: check that the non-ignored targets lie in [0, 1] (one min/max per call).

    Example::

        >>> loss = SoftBCEWithLogitsLoss(ignore_value=255)
        >>> loss(torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5))  # log 2
        tensor(0.6931)
    """

    def __init__(
        self,
        pos_weight: float | Sequence[float] | torch.Tensor | None = None,
        ignore_value: float | None = None,
        reduction: LossReduction | str = LossReduction.MEAN,
        validate: bool = True,
    ) -> None:
        super().__init__(reduction=look_up_option(reduction, LossReduction).value)
        pw: torch.Tensor | None = None
        if pos_weight is not None:
            pw = torch.as_tensor(pos_weight, dtype=torch.float32).reshape(-1)
            if pw.numel() == 0 or bool((pw <= 0).any()) or not bool(torch.isfinite(pw).all()):
                raise ValueError(f"pos_weight must be positive and finite, got {pos_weight}.")
        self.register_buffer("pos_weight", pw)
        self.ignore_value = None if ignore_value is None else float(ignore_value)
        self.validate = validate

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            input: ``(B, C, *spatial)`` logits, e.g. ``(B, 1, H, W)``.
            target: ``(B, C, *spatial)`` probabilities in [0, 1] (``ignore_value`` allowed).
            mask: optional ``(B, 1 or C, *spatial)``; non-zero = pixel used, 0 = ignored.

        Raises:
            ValueError: shapes differ, ``pos_weight`` does not match ``C``, or a used target is
                outside [0, 1] (the message gives the range found).
        """
        if input.shape != target.shape:
            raise ValueError(
                f"input and target must have the same shape, got {tuple(input.shape)} and {tuple(target.shape)}."
            )
        if input.ndim < 2:
            raise ValueError(f"input must have shape (B, C, *spatial), got {tuple(input.shape)}.")
        if self.pos_weight is not None and self.pos_weight.numel() not in (1, input.shape[1]):
            raise ValueError(
                f"pos_weight has {self.pos_weight.numel()} values but input has {input.shape[1]} channels."
            )
        valid: torch.Tensor | None = None
        if self.ignore_value is not None:
            valid = target != self.ignore_value
        if mask is not None:
            if mask.ndim != input.ndim or mask.shape[0] != input.shape[0] or mask.shape[2:] != input.shape[2:]:
                raise ValueError(
                    f"mask must have shape (B, 1 or C, *spatial) matching input {tuple(input.shape)}, got "
                    f"{tuple(mask.shape)}."
                )
            m = (mask != 0).expand_as(input)
            valid = m if valid is None else valid & m
        if self.validate:
            used = target if valid is None else target[valid]
            if used.numel() > 0:
                lo, hi = float(used.min()), float(used.max())
                if torch.isnan(used).any() or lo < 0.0 or hi > 1.0:
                    raise ValueError(
                        f"soft-label BCE targets must be probabilities in [0, 1], got values in [{lo:.4g}, "
                        f"{hi:.4g}]; mark unknown pixels with ignore_value or mask."
                    )
        safe_target = target if valid is None else torch.where(valid, target, torch.zeros_like(target))
        loss = soft_bce_with_logits(input, safe_target, valid=valid, pos_weight=self.pos_weight)
        if self.reduction == LossReduction.SUM.value:
            return loss.sum()
        if self.reduction == LossReduction.NONE.value:
            return loss
        n = loss.numel() if valid is None else valid.sum()
        if valid is not None and int(n) == 0:
            return loss.sum() * 0.0
        return loss.sum() / n
