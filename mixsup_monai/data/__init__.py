"""Data: the datalist contract, block items, the p(c|z) table, samplers (same-z groups, ratio mixing)."""

from __future__ import annotations

from mixsup_monai.data.blocks import block_items, block_label_map, mask_estimation_samples
from mixsup_monai.data.datalist import (
    DatalistError,
    DatalistProblem,
    check_datalist,
    load_datalist,
    read_label_map,
    slide_items,
    slides_of,
)
from mixsup_monai.data.label_stats import (
    LabelStatsTable,
    estimate_label_stats,
    estimate_label_stats_from_csv,
    z_to_row_index,
)
from mixsup_monai.data.mixing_sampler import EmptyPoolMode, RatioBatchSampler, apportion
from mixsup_monai.data.samplers import GroupedBatchSampler

__all__ = [
    "DatalistError",
    "DatalistProblem",
    "EmptyPoolMode",
    "GroupedBatchSampler",
    "LabelStatsTable",
    "RatioBatchSampler",
    "apportion",
    "block_items",
    "block_label_map",
    "check_datalist",
    "estimate_label_stats",
    "estimate_label_stats_from_csv",
    "load_datalist",
    "mask_estimation_samples",
    "read_label_map",
    "slide_items",
    "slides_of",
    "z_to_row_index",
]
