"""Multi-negative (complementary-label) loss of NPL for patches carrying "not c" pseudo labels."""

from __future__ import annotations

import torch
from monai.utils import LossReduction, look_up_option
from torch.nn.modules.loss import _Loss

__all__ = ["log_one_minus_softmax", "multi_negative_loss", "MultiNegativeLoss"]


def log_one_minus_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``log(1 - softmax(z)_c)`` for every class, stable when ``softmax(z)_c -> 1``.

    Uses ``1 - softmax(z)_c = Σ_{j≠c} exp(z_j) / Σ_j exp(z_j)``, i.e.
    ``logsumexp_{j≠c} z_j - logsumexp_j z_j``: finite (and with finite gradients) even where
    ``softmax(z)_c`` rounds to 1 in floating point. Memory ``O(B · C²)``.

    Args:
        logits: ``(B, C)`` logits, ``C >= 2``.

    Returns:
        ``(B, C)`` tensor of ``log(1 - f(c|x))``.
    """
    c = logits.shape[1]
    eye = torch.eye(c, dtype=torch.bool, device=logits.device)
    others = logits.unsqueeze(1).expand(-1, c, -1).masked_fill(eye, float("-inf"))
    return torch.logsumexp(others, dim=2) - torch.logsumexp(logits, dim=1, keepdim=True)


def multi_negative_loss(
    input: torch.Tensor, negative: torch.Tensor, softmax: bool = True, eps: float = 1e-7
) -> torch.Tensor:
    """Per-patch multi-negative loss (Tokunaga et al., Eq. 4, corrected; METHODS.md §3).

    ``L = -((C - |y|) / (C - 1)) · Σ_c y_c · log(1 - f(c|x))``, where ``y`` are the patch's negative
    labels and ``|y|`` their number. The paper prints ``log(1 - log f)``; the complementary-label
    loss is ``log(1 - f)``. With ``|y| = 1`` this is the single negative loss (Eq. 3); the weight
    falls linearly as negative labels accumulate, and is 0 when every class is negated. Patches
    without negative labels get 0.

    Args:
        input: ``(B, C)`` logits (``softmax=True``) or class probabilities (``softmax=False``).
        negative: ``(B, C)`` multi-hot negative labels (1 = "not c").
        softmax: apply a softmax to ``input`` (computed stably from the logits).
        eps: probabilities are clamped to ``1 - eps`` when ``softmax=False``.

    Returns:
        ``(B,)`` loss per patch.
    """
    c = input.shape[1]
    y = negative.to(input.dtype)
    log_q = log_one_minus_softmax(input) if softmax else torch.log(torch.clamp(1.0 - input, min=eps))
    n_neg = y.sum(dim=1)
    weight = (c - n_neg) / (c - 1)
    return -weight * (y * log_q).sum(dim=1)


class MultiNegativeLoss(_Loss):
    """Multi negative pseudo-label loss of NPL (Tokunaga et al., §3.3, Eq. 4 corrected to log(1 - f)).

    ``L = -((C - |y|) / (C - 1)) · Σ_c y_c log(1 - f(c|x))`` for patches with ``|y| >= 1``
    accumulated negative labels ("not c"). Patches without a negative label contribute nothing;
    with ``reduction="mean"`` the sum is divided by the number of patches that HAVE at least one
    negative label (0 when there are none), so the loss scale does not depend on how many
    positively-labelled patches share the batch. Positive pseudo labels use ordinary
    cross-entropy (e.g. ``torch.nn.CrossEntropyLoss(ignore_index=-1)`` on the ``-1 = none``
    labels of :mod:`mixsup_monai.methods.npl`).

    Args:
        softmax: ``input`` holds logits and a softmax is applied (stable ``log(1 - softmax)``);
            False: ``input`` holds probabilities.
        reduction: ``"mean"`` (over patches with a negative label), ``"sum"`` or ``"none"`` (``(B,)``).
        eps: clamp of ``1 - f`` when ``softmax=False``.

    Example::

        >>> loss = MultiNegativeLoss()
        >>> loss(torch.zeros(1, 5), torch.tensor([[0, 0, 0, 1, 0]]))  # -log(1 - 0.2)
        tensor(0.2231)
    """

    def __init__(
        self, softmax: bool = True, reduction: LossReduction | str = LossReduction.MEAN, eps: float = 1e-7
    ) -> None:
        super().__init__(reduction=look_up_option(reduction, LossReduction).value)
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must lie in (0, 1), got {eps}.")
        self.softmax = softmax
        self.eps = eps

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: ``(B, C)`` logits or probabilities, ``C >= 2``.
            target: ``(B, C)`` multi-hot negative labels (bool or 0/1).

        Raises:
            ValueError: shapes differ or are not ``(B, C)`` with ``C >= 2``, labels are not 0/1, or
                probabilities (``softmax=False``) lie outside [0, 1].
        """
        if input.ndim != 2 or input.shape[1] < 2:
            raise ValueError(f"input must have shape (B, C) with C >= 2 classes, got {tuple(input.shape)}.")
        if target.shape != input.shape:
            raise ValueError(
                f"negative labels must have the shape of input {tuple(input.shape)}, got {tuple(target.shape)}."
            )
        if target.dtype != torch.bool:
            bad = (target != 0) & (target != 1)
            if bool(bad.any()):
                found = sorted({float(v) for v in target[bad].unique().tolist()})
                raise ValueError(f"negative labels must be multi-hot 0/1, found values {found}.")
        if not self.softmax and input.numel() > 0:
            lo, hi = float(input.min()), float(input.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"with softmax=False input must hold probabilities in [0, 1], got values in [{lo:.4g}, "
                    f"{hi:.4g}]; pass logits with softmax=True."
                )
        loss = multi_negative_loss(input, target, softmax=self.softmax, eps=self.eps)
        if self.reduction == LossReduction.SUM.value:
            return loss.sum()
        if self.reduction == LossReduction.NONE.value:
            return loss
        labelled = (target != 0).any(dim=1)
        n = int(labelled.sum())
        if n == 0:
            return loss.sum() * 0.0
        return loss.sum() / n
