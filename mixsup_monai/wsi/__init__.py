"""Whole-slide image access: readers with per-file fallback, label maps, tissue, patch grids, pyramid writing."""

from __future__ import annotations

from mixsup_monai.wsi.cache import SlideCache, get_slide
from mixsup_monai.wsi.grid import GRID_CACHE_VERSION, PatchGrid, build_patch_grid
from mixsup_monai.wsi.integrity import colour_mismatch, level_problems, tiff_header_problem
from mixsup_monai.wsi.labels import IGNORE_INDEX, crop_label_map, read_label_map
from mixsup_monai.wsi.plain_image import PLAIN_IMAGE_MAX_PIXELS, PlainImage, plain_image_format
from mixsup_monai.wsi.pyramid import downsample_rgb, write_pyramidal_tiff
from mixsup_monai.wsi.reader import (
    DEFAULT_BACKENDS,
    MPP_PLAUSIBLE_RANGE,
    Backend,
    MppSource,
    RegionsJob,
    Slide,
    SlideInfo,
    cucim_incompatibility,
    open_slide,
)
from mixsup_monai.wsi.tiff_tiles import TiffTileReader
from mixsup_monai.wsi.tissue import (
    DEFAULT_SATURATION_THRESHOLD,
    OTSU_THRESHOLD_RANGE,
    TissueMask,
    TissueMethod,
    detect_tissue,
    is_tissue,
    saturation,
    save_tissue_overlay,
    tissue_pixels,
)

__all__ = [
    "Backend",
    "DEFAULT_SATURATION_THRESHOLD",
    "GRID_CACHE_VERSION",
    "IGNORE_INDEX",
    "MPP_PLAUSIBLE_RANGE",
    "MppSource",
    "OTSU_THRESHOLD_RANGE",
    "PatchGrid",
    "RegionsJob",
    "Slide",
    "SlideCache",
    "SlideInfo",
    "TissueMask",
    "TissueMethod",
    "build_patch_grid",
    "crop_label_map",
    "cucim_incompatibility",
    "detect_tissue",
    "downsample_rgb",
    "get_slide",
    "is_tissue",
    "open_slide",
    "read_label_map",
    "saturation",
    "save_tissue_overlay",
    "tissue_pixels",
    "write_pyramidal_tiff",
    "DEFAULT_BACKENDS",
    "PLAIN_IMAGE_MAX_PIXELS",
    "PlainImage",
    "TiffTileReader",
    "colour_mismatch",
    "level_problems",
    "plain_image_format",
    "tiff_header_problem",
]
