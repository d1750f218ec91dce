"""Data: the datalist contract and its p(c | z) table file, patch datasets, ratio mixing of pools, slide batches."""

from __future__ import annotations

from mixsup_monai.data.annotations import (
    AnnotatedDataset,
    annotated_tiles,
    annotation_patch_items,
    annotation_slide_items,
    labelled_patches,
    tile_positions,
)
from mixsup_monai.data.datalist import (
    PATH_KEYS,
    SECTIONS,
    TASK_REQUIREMENTS,
    TASKS,
    DatalistError,
    DatalistProblem,
    Requirement,
    check_datalist,
    load_datalist,
    requirements_table,
    slides_of,
)
from mixsup_monai.data.identity import slide_id, unique_slide_ids
from mixsup_monai.data.label_stats import LabelStatsTable, z_to_row_index
from mixsup_monai.data.mixing_sampler import EmptyPoolMode, RatioBatchSampler, apportion
from mixsup_monai.data.patch_dataset import PatchBatchSampler, WSIPatchDataset, collate_patches
from mixsup_monai.data.slides import SlideKeys, collate_slides, prepare_slide_batch, slide_items

__all__ = [
    "AnnotatedDataset",
    "DatalistError",
    "DatalistProblem",
    "EmptyPoolMode",
    "LabelStatsTable",
    "PATH_KEYS",
    "PatchBatchSampler",
    "RatioBatchSampler",
    "Requirement",
    "SECTIONS",
    "SlideKeys",
    "TASKS",
    "TASK_REQUIREMENTS",
    "WSIPatchDataset",
    "annotated_tiles",
    "annotation_patch_items",
    "annotation_slide_items",
    "apportion",
    "check_datalist",
    "collate_patches",
    "collate_slides",
    "labelled_patches",
    "load_datalist",
    "prepare_slide_batch",
    "requirements_table",
    "slide_id",
    "slide_items",
    "slides_of",
    "tile_positions",
    "unique_slide_ids",
    "z_to_row_index",
]
