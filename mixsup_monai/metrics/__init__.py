"""Metrics: segmentation IoU / Dice (boundary-band masked), component F1 against dots, region OP / PC / mIoU."""

from __future__ import annotations

from mixsup_monai.metrics.region import RegionMetric, RegionMetricName, proportion_error, region_counts, region_metrics
from mixsup_monai.metrics.segmentation import (
    IoUDiceMetric,
    SegmentationIoUDice,
    boundary_band,
    component_f1,
    confusion_counts,
    iou_dice,
    masked_iou_dice,
    per_class_component_f1,
)
from mixsup_monai.metrics.slide import (
    quadratic_weighted_kappa,
    roc_auc,
    roc_points,
    save_roc_png,
    sensitivity_specificity,
    slide_classification_metrics,
    specificity_at_sensitivity,
)

__all__ = [
    "IoUDiceMetric",
    "SegmentationIoUDice",
    "boundary_band",
    "component_f1",
    "confusion_counts",
    "iou_dice",
    "masked_iou_dice",
    "per_class_component_f1",
    # slide-level classification (MixSup issue)
    "quadratic_weighted_kappa",
    "roc_auc",
    "roc_points",
    "save_roc_png",
    "sensitivity_specificity",
    "slide_classification_metrics",
    "specificity_at_sensitivity",
    # region-based metrics of NPL (Tokunaga et al., Eq. 7)
    "RegionMetric",
    "RegionMetricName",
    "proportion_error",
    "region_counts",
    "region_metrics",
]
