"""Writing pyramidal tiled TIFFs that OpenSlide and cuCIM both open with the right levels and MPP."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["write_pyramidal_tiff", "downsample_rgb"]


def downsample_rgb(image: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter down-sampling of an ``(H, W, C)`` uint8 image by an integer ``factor``.

    Edges that do not fill a whole ``factor x factor`` box are averaged over the pixels present,
    so the result has ``ceil(H / factor) x ceil(W / factor)`` pixels like a slide scanner's pyramid.
    """
    if factor == 1:
        return image
    h, w = image.shape[:2]
    ph, pw = (-h) % factor, (-w) % factor
    padded = np.pad(image.astype(np.float32), ((0, ph), (0, pw), (0, 0)), mode="edge")
    hh, ww = padded.shape[0] // factor, padded.shape[1] // factor
    out = padded.reshape(hh, factor, ww, factor, -1).mean(axis=(1, 3))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def write_pyramidal_tiff(
    path: str | Path,
    image: np.ndarray,
    mpp: float,
    tile_size: int = 256,
    min_levels: int = 3,
    min_level_size: int = 256,
    compression: str = "jpeg",
    quality: int = 90,
) -> list[tuple[int, int]]:
    """Write an RGB image as a tiled, pyramidal TIFF with every level in the main IFD chain.

    Levels are down-sampled by 2 until the long side is below ``min_level_size`` (at least
    ``min_levels`` levels). Each level is a separate top-level IFD -- not a SubIFD, which OpenSlide
    and cuCIM do not see -- and carries resolution tags in pixels per centimetre, so that OpenSlide
    reports ``openslide.mpp-x`` and cuCIM its spacing correctly.

    Args:
        path: output ``.tif``/``.tiff`` path.
        image: ``(H, W, 3)`` uint8 level-0 image.
        mpp: microns per pixel at level 0.
        tile_size: tile edge in pixels (multiple of 16).
        min_levels: minimum number of pyramid levels.
        min_level_size: stop adding levels once the long side is smaller than this.
        compression: TIFF compression of the tiles (``"jpeg"`` for a scanner-like file).
        quality: JPEG quality.

    Returns:
        The ``(width, height)`` of each level written.
    """
    import tifffile

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"write_pyramidal_tiff expects an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    if mpp <= 0:
        raise ValueError(f"write_pyramidal_tiff: mpp must be > 0, got {mpp}")
    if tile_size % 16:
        raise ValueError(f"write_pyramidal_tiff: tile_size must be a multiple of 16, got {tile_size}")
    long_side = max(image.shape[:2])
    n_levels = max(min_levels, 1 + max(0, math.ceil(math.log2(max(long_side / min_level_size, 1)))))
    sizes = []
    compression_args = {"compression": compression}
    if compression == "jpeg":
        compression_args = {"compression": "jpeg", "compressionargs": {"level": quality}}
    with tifffile.TiffWriter(str(path), bigtiff=image.nbytes > 2**31) as tif:
        level_image = image
        for level in range(n_levels):
            if level > 0:
                level_image = downsample_rgb(level_image, 2)
            px_per_cm = 1e4 / (mpp * 2**level)
            tif.write(
                level_image,
                tile=(tile_size, tile_size),
                photometric="rgb",
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1,
                metadata=None,
                **compression_args,
            )
            sizes.append((level_image.shape[1], level_image.shape[0]))
    return sizes
