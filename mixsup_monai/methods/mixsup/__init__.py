"""MixSup, mixed supervision: region patches, EM rule with hard negatives, soft-label BCE, top-K stage 2, inference."""

from __future__ import annotations

from mixsup_monai.methods.mixsup.data import (
    PatchTargetD,
    PatchTargetd,
    PatchTargetDict,
    image_labelled_slides,
    region_patch_items,
    slide_label_of,
)
from mixsup_monai.methods.mixsup.forest import FEATURE_NAMES, RandomForestSlideClassifier, morphological_features
from mixsup_monai.methods.mixsup.handlers import SlideMetricsSaver, SlideResultSaver
from mixsup_monai.methods.mixsup.inferer import SlideTopKInferer
from mixsup_monai.methods.mixsup.pseudo_labels import (
    MixSupPseudoLabel,
    MixSupPseudoLabelD,
    MixSupPseudoLabeld,
    MixSupPseudoLabelDict,
    MixSupPseudoLabelStats,
    mixsup_pseudo_label_stats,
    mixsup_pseudo_labels,
)
from mixsup_monai.methods.mixsup.rules import MixSupRule, TopKMILRule
from mixsup_monai.methods.mixsup.soft_bce_loss import SoftBCEWithLogitsLoss, soft_bce_with_logits
from mixsup_monai.methods.mixsup.stage2 import (
    TopKMeanClassifier,
    TopKSlideClassifier,
    balanced_bce,
    read_top_k,
    top_k_indices,
)

__all__ = [
    "FEATURE_NAMES",
    "MixSupPseudoLabel",
    "MixSupPseudoLabelD",
    "MixSupPseudoLabelDict",
    "MixSupPseudoLabelStats",
    "MixSupPseudoLabeld",
    "MixSupRule",
    "PatchTargetD",
    "PatchTargetDict",
    "PatchTargetd",
    "RandomForestSlideClassifier",
    "SlideMetricsSaver",
    "SlideResultSaver",
    "SlideTopKInferer",
    "SoftBCEWithLogitsLoss",
    "TopKMILRule",
    "TopKMeanClassifier",
    "TopKSlideClassifier",
    "balanced_bce",
    "image_labelled_slides",
    "mixsup_pseudo_label_stats",
    "mixsup_pseudo_labels",
    "morphological_features",
    "read_top_k",
    "region_patch_items",
    "slide_label_of",
    "soft_bce_with_logits",
    "top_k_indices",
]
