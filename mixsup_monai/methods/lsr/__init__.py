"""LSR, label super-resolution: block items, the p(c | z) table, same-z groups, the LSR and low-res losses."""

from __future__ import annotations

from mixsup_monai.methods.lsr.annotations import (
    HIGH_RES_KEY,
    PIXEL_LABELS_KEY,
    HighResPrepareBatch,
    annotation_blocks,
    most_likely_z,
)
from mixsup_monai.methods.lsr.blocks import block_items, block_label_map, mask_estimation_samples
from mixsup_monai.methods.lsr.label_stats import (
    LabelStatsTable,
    estimate_label_stats,
    estimate_label_stats_from_csv,
    label_stats_from_fractions,
    z_to_row_index,
)
from mixsup_monai.methods.lsr.lowres_loss import LowResolutionLabelLoss, low_resolution_targets
from mixsup_monai.methods.lsr.samplers import GroupedBatchSampler
from mixsup_monai.methods.lsr.super_resolution_loss import (
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

__all__ = [
    "HIGH_RES_KEY",
    "PIXEL_LABELS_KEY",
    "GroupedBatchSampler",
    "HighResPrepareBatch",
    "LSRDistance",
    "LSRFormulation",
    "LSRVariance",
    "LabelStatsTable",
    "LabelSuperResolutionLoss",
    "LowResolutionLabelLoss",
    "SingletonGroups",
    "annotation_blocks",
    "block_items",
    "block_label_map",
    "block_statistics",
    "effective_target_std",
    "estimate_label_stats",
    "estimate_label_stats_from_csv",
    "group_index_from_labels",
    "group_statistics",
    "high_res_cross_entropy",
    "label_stats_from_fractions",
    "low_resolution_targets",
    "lsr_distance",
    "mask_estimation_samples",
    "most_likely_z",
    "z_to_row_index",
]
