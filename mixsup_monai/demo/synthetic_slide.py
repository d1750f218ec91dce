"""Large sparse synthetic slides for benchmarks: a few tissue textures repeated in blobs on glass, in seconds.

A 100,000 x 100,000 px slide is ~150,000 tiles at level 0; rendering and encoding each would take minutes. Here
every tile is either glass, tissue (a tile of one of a few texture images, repeated periodically) or a blob
border (the only tiles rendered one by one), and the repeated tiles carry keys for
:class:`~mixsup_monai.wsi.pyramid.PyramidalTiffWriter`, which then encodes each of them -- and each reduced
combination of them -- once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.utils import optional_import

from mixsup_monai.demo.textures import CENTRES, Tex, render_slide, smooth_noise
from mixsup_monai.wsi.pyramid import PyramidalTiffWriter

__all__ = ["default_tissue_textures", "write_synthetic_slide"]

tqdm, _has_tqdm = optional_import("tqdm", name="tqdm")

#: glass colour of the synthetic slides (the demo cohorts' standard stain background)
GLASS_RGB = (240, 238, 243)
#: lattice points of the tissue field per tile edge: tiles are classified exactly from them (below)
_FIELD_STEPS = 4
#: tiles per edge of a block of one texture: a power of two, so that the reduced tiles of the first levels
#: combine tiles of one texture only and are reused through the writer's keys
_TEXTURE_BLOCK = 16


def default_tissue_textures(tile_size: int = 256, seed: int = 0) -> list[np.ndarray]:
    """Procedural H&E textures (the demo cohorts' renderer): two ``(4 T, 4 T, 3)`` uint8 images of mixed tissue.

    Args:
        tile_size: tile edge ``T`` of the slide they are for.
        seed: random seed of the rendering.
    """
    rng = np.random.default_rng(seed)
    layouts = ((Tex.STROMA, Tex.CARCINOMA, Tex.DUCTS, Tex.INFLAMED), (Tex.ADIPOSE, Tex.LYMPHOID, Tex.MUCOSA, Tex.SOLID))
    side = 4 * tile_size
    images = []
    for layout in layouts:
        tex = np.empty((tile_size, tile_size), np.uint8)  # the texture map at 1/4 of the image, one quadrant each
        half = tile_size // 2
        for n, texture in enumerate(layout):
            oy, ox = divmod(n, 2)
            tex[oy * half : (oy + 1) * half, ox * half : (ox + 1) * half] = texture
        rgb, _ = render_slide(tex, (side, side), CENTRES["A"], rng, pen_prob=0.0, scratch_prob=0.0)
        images.append(rgb)
    return images


def _texture_grids(textures: Sequence[np.ndarray], tile_size: int) -> list[np.ndarray]:
    """Each texture cut into a ``(rows, cols, T, T, 3)`` grid of tiles (cropped to whole tiles)."""
    grids = []
    for i, image in enumerate(textures):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
            raise ValueError(
                f"write_synthetic_slide: tiles[{i}] must be (H, W, 3) uint8, got {image.shape} {image.dtype}"
            )
        rows, cols = image.shape[0] // tile_size, image.shape[1] // tile_size
        if rows == 0 or cols == 0:
            raise ValueError(
                f"write_synthetic_slide: tiles[{i}] ({image.shape[:2]}) is smaller than one {tile_size} px tile"
            )
        crop = np.ascontiguousarray(image[: rows * tile_size, : cols * tile_size, :3])
        grids.append(crop.reshape(rows, tile_size, cols, tile_size, 3).transpose(0, 2, 1, 3, 4).copy())
    return grids


def _tissue_field(columns: int, rows: int, blob_tiles: float, fraction: float, rng) -> tuple[np.ndarray, float]:
    """``(lattice, threshold)``: a smooth random field with ``_FIELD_STEPS`` points per tile edge (plus one), and
    the level above which a ``fraction`` of it is tissue."""
    shape = (rows * _FIELD_STEPS + 1, columns * _FIELD_STEPS + 1)
    lattice = smooth_noise(rng, shape, max(1.0, blob_tiles * _FIELD_STEPS))
    return lattice, float(np.quantile(lattice, 1.0 - fraction))


def _bilinear_weights(tile_size: int) -> np.ndarray:
    """``(T, steps + 1)`` weights interpolating a tile's lattice window at its pixel centres."""
    position = (np.arange(tile_size) + 0.5) * _FIELD_STEPS / tile_size
    weights = np.maximum(0.0, 1.0 - np.abs(position[:, None] - np.arange(_FIELD_STEPS + 1)[None, :]))
    return weights.astype(np.float32)


def write_synthetic_slide(
    path: str | os.PathLike,
    size: Sequence[int] = (100_000, 100_000),
    tissue_fraction: float = 0.3,
    tiles: Sequence[np.ndarray] | None = None,
    mpp: float = 0.5,
    seed: int = 0,
    tile_size: int = 256,
    quality: int = 90,
    blob_size: float | None = None,
    progress: bool = False,
) -> dict:
    """Write a large pyramidal JPEG TIFF of tissue blobs on glass through the tile-wise pyramid writer.

    Tissue is where a smooth random field (correlation length ``blob_size``) is above its ``1 - tissue_fraction``
    quantile. The field is bilinear between lattice points (4 per tile edge), so a tile whose lattice points are
    all above (below) the threshold is entirely tissue (glass) and is a repeated, keyed tile; only border tiles
    are rendered. Tissue shows the ``tiles`` images, each repeated periodically in blocks of 16 x 16 tiles.

    Args:
        path: output ``.tif``.
        size: level-0 ``(width, height)`` in pixels.
        tissue_fraction: wanted fraction of tissue, in (0, 1).
        tiles: RGB uint8 texture images (at least ``tile_size`` px each, e.g. the 512 px tiles of
            ``../shared/data/tiles``); default :func:`default_tissue_textures`.
        mpp: level-0 microns per pixel written in the tags.
        seed: random seed of the tissue layout.
        tile_size: TIFF tile edge.
        quality: JPEG quality.
        blob_size: correlation length of the tissue field in level-0 px (default: the long side / 12).
        progress: show a progress bar over the tile rows.

    Returns:
        ``{"path", "size", "levels": [(w, h), ...], "tissue_fraction": rendered fraction, "bytes", "seconds"}``.
    """
    start = time.perf_counter()
    width, height = (int(s) for s in size)
    if not 0.0 < tissue_fraction < 1.0:
        raise ValueError(f"write_synthetic_slide: tissue_fraction must be in (0, 1), got {tissue_fraction!r}")
    grids = _texture_grids(default_tissue_textures(tile_size, seed) if tiles is None else tiles, tile_size)
    rng = np.random.default_rng(seed)
    writer = PyramidalTiffWriter(path, (width, height), mpp, channels=3, tile_size=tile_size, quality=quality)
    with writer:
        blob_tiles = (max(width, height) / 12 if blob_size is None else float(blob_size)) / tile_size
        lattice, threshold = _tissue_field(
            writer._levels[0].columns, writer._levels[0].rows, blob_tiles, tissue_fraction, rng
        )
        tissue_px = _write_tile_rows(writer, grids, lattice, threshold, rng, progress)
    return {
        "path": str(path),
        "size": (width, height),
        "levels": writer.level_sizes,
        "tissue_fraction": tissue_px / (width * height),
        "bytes": Path(path).stat().st_size,
        "seconds": time.perf_counter() - start,
    }


def _write_tile_rows(
    writer: PyramidalTiffWriter, grids: list[np.ndarray], lattice: np.ndarray, threshold: float, rng, progress: bool
) -> int:
    """Classify and write every row of tiles; returns the number of tissue pixels written."""
    T, steps = writer.tile_size, _FIELD_STEPS
    width, height = writer.size
    columns, rows = writer._levels[0].columns, writer._levels[0].rows
    glass = np.empty((T, T, 3), np.uint8)
    glass[:] = GLASS_RGB
    glass += rng.integers(0, 2, (T, T, 1), dtype=np.uint8)  # a faint texture, cheap to encode
    texture_of_block = rng.integers(0, len(grids), (rows // _TEXTURE_BLOCK + 1, columns // _TEXTURE_BLOCK + 1))
    weights = _bilinear_weights(T)
    tissue_px = 0
    bar = tqdm(total=rows, desc=f"writing {Path(writer.path).name}", unit="row") if progress and _has_tqdm else None
    for ty in range(rows):
        band = lattice[ty * steps : ty * steps + steps + 1]
        windows = np.lib.stride_tricks.sliding_window_view(band, (steps + 1, steps + 1))[0, ::steps]
        lowest, highest = windows.min(axis=(1, 2)), windows.max(axis=(1, 2))
        valid_h = min(T, height - ty * T)
        row, keys = [], []
        for tx in range(columns):
            k = int(texture_of_block[ty // _TEXTURE_BLOCK, tx // _TEXTURE_BLOCK])
            grid = grids[k]
            texture_key = ("tissue", k, ty % grid.shape[0], tx % grid.shape[1])
            texture = grid[texture_key[2], texture_key[3]]
            valid_w = min(T, width - tx * T)
            if lowest[tx] > threshold:
                row.append(texture), keys.append(texture_key)
                tissue_px += valid_h * valid_w
            elif highest[tx] <= threshold:
                row.append(glass), keys.append("glass")
            else:  # a blob border: the field interpolated at the tile's pixels decides
                inside = (weights @ windows[tx] @ weights.T) > threshold
                row.append(np.where(inside[..., None], texture, glass)), keys.append(None)
                tissue_px += int(inside[:valid_h, :valid_w].sum())
        writer.write_tile_row(row, keys)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return tissue_px
