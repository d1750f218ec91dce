"""Losses: label super-resolution (LSR), its low-resolution baseline, soft-label BCE (MixSup), multi-negative (NPL)."""

from __future__ import annotations

from mixsup_monai.losses.lowres import LowResolutionLabelLoss, low_resolution_targets
from mixsup_monai.losses.lsr import (
    LabelSuperResolutionLoss,
    LSRDistance,
    LSRFormulation,
    LSRVariance,
    SingletonGroups,
    block_statistics,
    effective_target_std,
    group_index_from_labels,
    group_statistics,
    high_res_cross_entropy,
    lsr_distance,
)
from mixsup_monai.losses.negative import MultiNegativeLoss, log_one_minus_softmax, multi_negative_loss
from mixsup_monai.losses.soft_bce import SoftBCEWithLogitsLoss, soft_bce_with_logits

__all__ = [
    "LSRDistance",
    "LSRFormulation",
    "LSRVariance",
    "LabelSuperResolutionLoss",
    "LowResolutionLabelLoss",
    "MultiNegativeLoss",
    "SingletonGroups",
    "SoftBCEWithLogitsLoss",
    "block_statistics",
    "effective_target_std",
    "group_index_from_labels",
    "group_statistics",
    "high_res_cross_entropy",
    "log_one_minus_softmax",
    "low_resolution_targets",
    "lsr_distance",
    "multi_negative_loss",
    "soft_bce_with_logits",
]
