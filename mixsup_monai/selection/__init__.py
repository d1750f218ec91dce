"""Pseudo-label selection rules: NPL negative / adaptive positive selectivity from class proportions."""

from __future__ import annotations

from mixsup_monai.selection.proportion import (
    FractionOf,
    ProportionSelection,
    ProportionSelector,
    Rounding,
    accumulate_negative_labels,
    fixed_threshold_pseudo_labels,
    negative_selectivity,
    positive_selectivity,
    predicted_class_ratio,
    proportion_pseudo_labels,
    round_counts,
    sum_absolute_error,
    summarize_selections,
)

__all__ = [
    "FractionOf",
    "ProportionSelection",
    "ProportionSelector",
    "Rounding",
    "accumulate_negative_labels",
    "fixed_threshold_pseudo_labels",
    "negative_selectivity",
    "positive_selectivity",
    "predicted_class_ratio",
    "proportion_pseudo_labels",
    "round_counts",
    "sum_absolute_error",
    "summarize_selections",
]
