"""MixSup method glue: pixel-labelled region patches, training targets, the top-K stage-2 slide classifier."""

from __future__ import annotations

from mixsup_monai.mixsup.data import (
    PatchTargetD,
    PatchTargetd,
    PatchTargetDict,
    image_labelled_slides,
    region_patch_items,
)
from mixsup_monai.mixsup.forest import FEATURE_NAMES, RandomForestSlideClassifier, morphological_features
from mixsup_monai.mixsup.inference import SlideTopKInferer, prepare_slide_batch, slide_items
from mixsup_monai.mixsup.stage2 import (
    TopKMeanClassifier,
    TopKSlideClassifier,
    balanced_bce,
    read_top_k,
    top_k_indices,
)

__all__ = [
    "FEATURE_NAMES",
    "RandomForestSlideClassifier",
    "morphological_features",
    "PatchTargetD",
    "PatchTargetDict",
    "PatchTargetd",
    "SlideTopKInferer",
    "TopKMeanClassifier",
    "TopKSlideClassifier",
    "balanced_bce",
    "image_labelled_slides",
    "prepare_slide_batch",
    "read_top_k",
    "region_patch_items",
    "slide_items",
    "top_k_indices",
]
