"""Data: the datalist contract, patch datasets, ratio mixing of pools, slide-level batches."""

from __future__ import annotations

from mixsup_monai.data.datalist import (
    PATH_KEYS,
    SECTIONS,
    TASKS,
    DatalistError,
    DatalistProblem,
    check_datalist,
    load_datalist,
    slides_of,
)
from mixsup_monai.data.identity import slide_id, unique_slide_ids
from mixsup_monai.data.mixing_sampler import EmptyPoolMode, RatioBatchSampler, apportion
from mixsup_monai.data.patch_dataset import PatchBatchSampler, WSIPatchDataset, collate_patches
from mixsup_monai.data.slides import SlideKeys, collate_slides, prepare_slide_batch, slide_items

__all__ = [
    "DatalistError",
    "DatalistProblem",
    "EmptyPoolMode",
    "PATH_KEYS",
    "PatchBatchSampler",
    "RatioBatchSampler",
    "SECTIONS",
    "SlideKeys",
    "TASKS",
    "WSIPatchDataset",
    "apportion",
    "check_datalist",
    "collate_patches",
    "collate_slides",
    "load_datalist",
    "prepare_slide_batch",
    "slide_id",
    "slide_items",
    "slides_of",
    "unique_slide_ids",
]
