"""NPL, negative pseudo labels from proportions: selectivity, rule, losses, patch classifier, handlers, inference."""

from __future__ import annotations

from mixsup_monai.methods.npl.data import (
    NPLTargetD,
    NPLTargetd,
    NPLTargetDict,
    annotation_class_items,
    known_region_slides,
    labelled_patch_items,
    oversample_by_class,
    patch_labels,
    proportion_classes,
    slide_name,
    tumour_region,
    weak_slides,
)
from mixsup_monai.methods.npl.handlers import (
    EvaluatorScorer,
    MStepEarlyStopping,
    RegionMetricsSaver,
    SlideClassMapSaver,
    WeakSlideSAE,
)
from mixsup_monai.methods.npl.inferer import PAPER_COLOURS, SlideClassMapInferer
from mixsup_monai.methods.npl.multi_negative_loss import MultiNegativeLoss, log_one_minus_softmax, multi_negative_loss
from mixsup_monai.methods.npl.networks import PatchClassifier, mobilenet_v2_classifier
from mixsup_monai.methods.npl.positive_negative_loss import PositiveNegativeLoss, positive_negative_loss
from mixsup_monai.methods.npl.rule import NPLRule
from mixsup_monai.methods.npl.selection import (
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
    "EvaluatorScorer",
    "FractionOf",
    "MStepEarlyStopping",
    "MultiNegativeLoss",
    "NPLRule",
    "NPLTargetD",
    "NPLTargetDict",
    "NPLTargetd",
    "PAPER_COLOURS",
    "PatchClassifier",
    "PositiveNegativeLoss",
    "ProportionSelection",
    "ProportionSelector",
    "RegionMetricsSaver",
    "Rounding",
    "SlideClassMapInferer",
    "SlideClassMapSaver",
    "WeakSlideSAE",
    "accumulate_negative_labels",
    "fixed_threshold_pseudo_labels",
    "known_region_slides",
    "annotation_class_items",
    "labelled_patch_items",
    "log_one_minus_softmax",
    "mobilenet_v2_classifier",
    "multi_negative_loss",
    "negative_selectivity",
    "oversample_by_class",
    "patch_labels",
    "positive_negative_loss",
    "positive_selectivity",
    "predicted_class_ratio",
    "proportion_classes",
    "proportion_pseudo_labels",
    "round_counts",
    "slide_name",
    "sum_absolute_error",
    "summarize_selections",
    "tumour_region",
    "weak_slides",
]
