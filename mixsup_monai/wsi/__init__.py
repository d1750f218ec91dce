"""Whole-slide image access: readers with per-file fallback, tissue detection, patch grids, pyramid writing."""

from __future__ import annotations

from mixsup_monai.wsi.pyramid import downsample_rgb, write_pyramidal_tiff

__all__ = ["downsample_rgb", "write_pyramidal_tiff"]
