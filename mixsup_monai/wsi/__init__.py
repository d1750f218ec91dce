"""Whole-slide image access: readers with per-file fallback, tissue detection, patch grids, pyramid writing."""

from __future__ import annotations

from mixsup_monai.wsi.grid import PatchGrid, build_patch_grid
from mixsup_monai.wsi.pyramid import downsample_rgb, write_pyramidal_tiff
from mixsup_monai.wsi.reader import Slide, SlideInfo, cucim_incompatibility, open_slide
from mixsup_monai.wsi.tissue import TissueMask, detect_tissue, is_tissue, save_tissue_overlay, tissue_pixels

__all__ = [
    "PatchGrid",
    "Slide",
    "SlideInfo",
    "TissueMask",
    "build_patch_grid",
    "cucim_incompatibility",
    "detect_tissue",
    "downsample_rgb",
    "is_tissue",
    "open_slide",
    "save_tissue_overlay",
    "tissue_pixels",
    "write_pyramidal_tiff",
]
