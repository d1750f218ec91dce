"""NPL method glue: tumour patches of weak slides, patch labels from masks, the rule, loss, scorer and inference.

Where NPL's pseudo labels are made: :class:`NPLRule` (``rule.py``), which calls the selectivity of
:mod:`mixsup_monai.selection` per slide inside the shared rounds of :mod:`mixsup_monai.rounds`.
"""

from __future__ import annotations

from mixsup_monai.npl.data import (
    NPLTargetD,
    NPLTargetd,
    NPLTargetDict,
    known_region_slides,
    labelled_patch_items,
    oversample_by_class,
    patch_labels,
    proportion_classes,
    slide_name,
    tumour_region,
    weak_slides,
)
from mixsup_monai.npl.inference import (
    PAPER_COLOURS,
    RegionMetricsSaver,
    SlideClassMapInferer,
    SlideClassMapSaver,
    collate_slides,
    prepare_slide_list,
)
from mixsup_monai.npl.loss import PositiveNegativeLoss, positive_negative_loss
from mixsup_monai.npl.rule import NPLRule
from mixsup_monai.npl.training import (
    EvaluatorScorer,
    MStepEarlyStopping,
    PatchClassifier,
    WeakSlideSAE,
    mobilenet_v2_classifier,
)

__all__ = [
    "PAPER_COLOURS",
    "EvaluatorScorer",
    "MStepEarlyStopping",
    "NPLRule",
    "NPLTargetD",
    "NPLTargetDict",
    "NPLTargetd",
    "PatchClassifier",
    "PositiveNegativeLoss",
    "RegionMetricsSaver",
    "SlideClassMapInferer",
    "SlideClassMapSaver",
    "WeakSlideSAE",
    "collate_slides",
    "known_region_slides",
    "labelled_patch_items",
    "mobilenet_v2_classifier",
    "oversample_by_class",
    "patch_labels",
    "positive_negative_loss",
    "prepare_slide_list",
    "proportion_classes",
    "slide_name",
    "tumour_region",
    "weak_slides",
]
