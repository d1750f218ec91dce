"""Deterministic demo cohorts (MixSup, LSR, NPL) of synthetic H&E slides with known pixel truth."""

from __future__ import annotations

from mixsup_monai.demo.cohorts import (
    DEFAULT_GROUPS,
    DEMO_VERSION,
    MASK_LEVEL,
    MPP,
    TASK_CLASSES,
    DemoTask,
    group_sizes,
    lsr_z,
    make_demo_cohort,
    mask_estimated_table,
)
from mixsup_monai.demo.ensure import ensure_demo_cohort, warn_if_demo_joins_annotations
from mixsup_monai.demo.textures import CENTRES, Stain, Tex, render_slide

__all__ = [
    "CENTRES",
    "DEFAULT_GROUPS",
    "DEMO_VERSION",
    "MASK_LEVEL",
    "MPP",
    "TASK_CLASSES",
    "DemoTask",
    "Stain",
    "Tex",
    "ensure_demo_cohort",
    "mask_estimated_table",
    "group_sizes",
    "lsr_z",
    "make_demo_cohort",
    "render_slide",
    "warn_if_demo_joins_annotations",
]
