"""Patch grids over tissue: level-0 coordinates at a chosen level or MPP, cached per slide and parameters."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixsup_monai.wsi.reader import Slide, open_slide
from mixsup_monai.wsi.tissue import TissueMask

__all__ = ["PatchGrid", "build_patch_grid", "GRID_CACHE_VERSION"]

logger = logging.getLogger(__name__)

#: Bumped whenever the grid computation changes, so that old cache files are not reused.
GRID_CACHE_VERSION = 1
_CELL_CHUNK = 2**16  # grid cells scored at once: memory grows with kept patches, not with slide area


@dataclass
class PatchGrid:
    """Top-left corners of the tissue patches of one slide.

    Attributes:
        x: ``(N,)`` int64 level-0 x of each patch's top-left corner.
        y: ``(N,)`` int64 level-0 y.
        tissue_fraction: ``(N,)`` float32 tissue share of each patch (from the tissue mask).
        level: pyramid level the patches are read at.
        patch_size: patch edge in pixels of ``level``.
        downsample: level-0 pixels per pixel of ``level``.
        params: slide path and every parameter that produced the grid.
        from_cache: True when loaded from the cache file instead of computed.
    """

    x: np.ndarray
    y: np.ndarray
    tissue_fraction: np.ndarray
    level: int
    patch_size: int
    downsample: float
    params: dict = field(default_factory=dict)
    from_cache: bool = False

    def __len__(self) -> int:
        return int(len(self.x))

    @property
    def locations(self) -> np.ndarray:
        """``(N, 2)`` int64 level-0 ``(x, y)``."""
        return np.stack([self.x, self.y], axis=1)

    def to_items(self, image_path: str | os.PathLike | None = None) -> list[dict]:
        """Datalist items for :class:`~mixsup_monai.data.patch_dataset.WSIPatchDataset`.

        Args:
            image_path: value of the ``"image"`` key (default: the slide's absolute path).

        Returns:
            ``[{"image": path, "location": [x, y], "size": [s, s], "level": level}, ...]``.
        """
        image = str(image_path) if image_path is not None else self.params.get("slide")
        if image is None:
            raise ValueError("PatchGrid.to_items: the grid does not record its slide; pass image_path")
        size = [self.patch_size, self.patch_size]
        return [
            {"image": image, "location": [x, y], "size": list(size), "level": self.level}
            for x, y in zip(self.x.tolist(), self.y.tolist())
        ]

    def save(self, path: str | os.PathLike) -> None:
        """Write the grid as ``.npz`` (arrays + JSON params), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "level": self.level,
            "patch_size": self.patch_size,
            "downsample": self.downsample,
            "params": self.params,
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, x=self.x, y=self.y, tissue_fraction=self.tissue_fraction, meta=np.array(json.dumps(meta)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PatchGrid:
        """Read a grid written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            return cls(
                x=f["x"].astype(np.int64),
                y=f["y"].astype(np.int64),
                tissue_fraction=f["tissue_fraction"].astype(np.float32),
                level=int(meta["level"]),
                patch_size=int(meta["patch_size"]),
                downsample=float(meta["downsample"]),
                params=meta["params"],
                from_cache=True,
            )


def _cache_key(path: str, tissue: TissueMask, params: dict) -> str:
    st = os.stat(path)
    h = hashlib.sha256()
    key = {
        "version": GRID_CACHE_VERSION,
        "path": path,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "tissue": [tissue.level, tissue.downsample, tissue.threshold, list(tissue.shape)],
        **params,
    }
    h.update(json.dumps(key, sort_keys=True, default=str).encode())
    h.update(np.packbits(tissue.mask).tobytes())
    return h.hexdigest()


def _choose_level(slide: Slide, level: int | None, mpp: float | None, mpp_rtol: float) -> int:
    if level is not None and mpp is not None:
        raise ValueError(f"slide {slide.info.path!r}: give level or mpp, not both (got level={level}, mpp={mpp})")
    if mpp is None:
        return slide._check_level(0 if level is None else level)
    level = slide.level_for_mpp(mpp)
    actual = slide.level_mpp(level)
    if abs(actual - mpp) > mpp_rtol * mpp:
        available = ", ".join(f"level {lv}: {slide.level_mpp(lv):.3g}" for lv in range(slide.info.level_count))
        raise ValueError(
            f"slide {slide.info.path!r}: no level within {mpp_rtol:.0%} of {mpp} um/px (the closest finer one, level "
            f"{level}, is {actual:.3g} um/px; available {available}); pass one of these mpp values or level="
        )
    return level


def _fail_or_skip(message: str, skip_empty: bool, empty: PatchGrid) -> PatchGrid:
    if skip_empty:
        logger.warning("%s (skipped: skip_empty=True)", message)
        return empty
    raise ValueError(message)


def _check_grid_args(path: str, tissue: TissueMask, patch_size, overlap, min_tissue_fraction) -> None:
    """Raise on a patch size, overlap, tissue fraction or tissue mask that :func:`build_patch_grid` cannot use."""
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or patch_size <= 0:
        raise ValueError(f"slide {path!r}: patch_size must be a positive int, got {patch_size!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or not 0 <= overlap < patch_size:
        raise ValueError(f"slide {path!r}: overlap must be an int in [0, patch_size={patch_size}), got {overlap!r}")
    if not 0.0 <= min_tissue_fraction <= 1.0:
        raise ValueError(f"slide {path!r}: min_tissue_fraction must be in [0, 1], got {min_tissue_fraction!r}")
    if not isinstance(tissue, TissueMask):
        raise TypeError(
            f"slide {path!r}: tissue must be a TissueMask (from detect_tissue), got {type(tissue).__name__}"
        )


def _load_cached(cache_file: Path, path: str) -> PatchGrid | None:
    """The grid stored in ``cache_file``, or ``None`` when there is none or it cannot be read."""
    if not cache_file.exists():
        return None
    try:
        grid = PatchGrid.load(cache_file)
        logger.debug("slide %r: patch grid loaded from %s", path, cache_file)
        return grid
    except Exception as e:  # a broken cache file is recomputed, not fatal
        logger.warning("slide %r: ignoring unreadable grid cache %s (%s)", path, cache_file, e)
        return None


def _tissue_patches(
    tissue: TissueMask,
    level_size: tuple[int, int],
    patch_size: int,
    stride: int,
    ds: float,
    min_tissue_fraction: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, tissue_fraction)`` of the grid cells with enough tissue, scored on a summed-area table of the mask.

    Args:
        tissue: the slide's mask.
        level_size: ``(width, height)`` of the level the patches are read at (at least one patch each way).
        patch_size: patch edge in pixels of that level.
        stride: step between patches in pixels of that level.
        ds: level-0 pixels per pixel of that level.
        min_tissue_fraction: minimum tissue share of a kept cell.

    Returns:
        ``(N,)`` int64 level-0 x and y of the kept cells' top-left corners (row by row) and their ``(N,)`` float32
        tissue fractions.
    """
    lw, lh = level_size
    nx, ny = (lw - patch_size) // stride + 1, (lh - patch_size) // stride + 1
    x0 = np.round(np.arange(nx) * stride * ds).astype(np.int64)
    side0 = patch_size * ds

    mask = tissue.mask
    mh, mw = mask.shape
    dm = tissue.downsample
    integral = np.zeros((mh + 1, mw + 1), np.int32)  # summed-area table of the mask, built in place
    integral[1:, 1:] = mask
    np.cumsum(integral, axis=0, out=integral)
    np.cumsum(integral, axis=1, out=integral)
    cx0 = np.clip(np.round(x0 / dm).astype(np.int64), 0, mw - 1)
    cx1 = np.clip(np.round((x0 + side0) / dm).astype(np.int64), cx0 + 1, mw)

    xs, ys, fs = [], [], []
    chunk_rows = max(1, _CELL_CHUNK // nx)
    for r0 in range(0, ny, chunk_rows):
        y0 = np.round(np.arange(r0, min(ny, r0 + chunk_rows)) * stride * ds).astype(np.int64)
        cy0 = np.clip(np.round(y0 / dm).astype(np.int64), 0, mh - 1)
        cy1 = np.clip(np.round((y0 + side0) / dm).astype(np.int64), cy0 + 1, mh)
        total = (
            integral[cy1[:, None], cx1[None, :]]
            - integral[cy0[:, None], cx1[None, :]]
            - integral[cy1[:, None], cx0[None, :]]
            + integral[cy0[:, None], cx0[None, :]]
        )
        frac = total / ((cy1 - cy0)[:, None] * (cx1 - cx0)[None, :])
        keep = (frac >= min_tissue_fraction) & (frac > 0) if min_tissue_fraction > 0 else np.ones_like(frac, bool)
        rows, cols = np.nonzero(keep)
        xs.append(x0[cols])
        ys.append(y0[rows])
        fs.append(frac[rows, cols].astype(np.float32))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(fs)


def _scan_slide(
    slide: Slide, tissue: TissueMask, params: dict, min_tissue_fraction: float, skip_empty: bool
) -> PatchGrid:
    """The tissue patches of the grid that ``params`` describes; no patch: an error, or an empty grid if skipped."""
    path, level, patch_size, overlap = params["slide"], params["level"], params["patch_size"], params["overlap"]
    ds = params["downsample"]
    empty = PatchGrid(
        np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), level, patch_size, ds, params
    )
    lw, lh = slide.info.level_dimensions[level]
    if lw < patch_size or lh < patch_size:
        return _fail_or_skip(
            f"slide {path!r} is {lw} x {lh} px at level {level}, smaller than one {patch_size} px patch; "
            "choose a finer level / smaller mpp or a smaller patch_size",
            skip_empty,
            empty,
        )
    x, y, fraction = _tissue_patches(tissue, (lw, lh), patch_size, patch_size - overlap, ds, min_tissue_fraction)
    grid = PatchGrid(
        x=x, y=y, tissue_fraction=fraction, level=level, patch_size=patch_size, downsample=ds, params=params
    )
    if len(grid) == 0:
        threshold = "user mask" if tissue.threshold is None else f"saturation threshold {tissue.threshold:.1f}"
        return _fail_or_skip(
            f"slide {path!r}: no tissue patch at level {level} (patch {patch_size} px, overlap {overlap}; tissue "
            f"{tissue.fraction:.1%} of the slide, {threshold}, mask level {tissue.level}; no patch has >= "
            f"{min_tissue_fraction:.0%} tissue); pass a tissue_mask (detect_tissue(slide, user_mask=...)) or lower "
            "min_tissue_fraction",
            skip_empty,
            empty,
        )
    return grid


def build_patch_grid(
    slide: Slide | str | os.PathLike,
    tissue: TissueMask,
    patch_size: int = 256,
    level: int | None = None,
    mpp: float | None = None,
    overlap: int = 0,
    min_tissue_fraction: float = 0.5,
    cache_dir: str | os.PathLike | None = None,
    skip_empty: bool = False,
    mpp_rtol: float = 0.1,
) -> PatchGrid:
    """Lay a regular patch grid over a slide and keep the patches with enough tissue.

    Patches lie fully inside the slide; the stride is ``patch_size - overlap`` pixels of ``level``. A
    patch's tissue fraction is the mean of the tissue mask over the patch's box. Memory grows with the
    number of kept patches and the mask size, not with the slide area (the grid is scanned in row chunks).

    With ``cache_dir`` the grid is stored as ``<stem>-<key>.npz`` there; the key hashes the absolute path,
    file size and mtime (ns), the tissue mask and every parameter, so touching the slide or changing a
    parameter computes a new grid.

    Args:
        slide: open slide or path.
        tissue: the slide's :class:`~mixsup_monai.wsi.tissue.TissueMask`.
        patch_size: patch edge in pixels of ``level``.
        level: level to read patches at (default 0).
        mpp: target microns per pixel instead of ``level`` (needs a known slide MPP; a level must be within
            ``mpp_rtol`` of it).
        overlap: overlap of neighbouring patches, in pixels of ``level`` (``0 <= overlap < patch_size``).
        min_tissue_fraction: minimum tissue share of a kept patch, in ``[0, 1]``.
        cache_dir: folder for the cached grid (``None``: no cache).
        skip_empty: on "no tissue" / "slide smaller than a patch", log a warning and return an empty grid
            instead of raising.
        mpp_rtol: relative tolerance between ``mpp`` and the chosen level's MPP.

    Returns:
        :class:`PatchGrid`.

    Raises:
        ValueError: no tissue patch, slide smaller than one patch (unless ``skip_empty``), bad parameters.
    """
    if not isinstance(slide, Slide):
        with open_slide(slide) as opened:
            return build_patch_grid(
                opened, tissue, patch_size, level, mpp, overlap, min_tissue_fraction, cache_dir, skip_empty, mpp_rtol
            )
    path = slide.info.path
    _check_grid_args(path, tissue, patch_size, overlap, min_tissue_fraction)
    level = _choose_level(slide, level, mpp, mpp_rtol)
    patch_size, overlap = int(patch_size), int(overlap)
    ds = float(slide.info.level_downsamples[level])
    params = {
        "slide": path,
        "patch_size": patch_size,
        "level": level,
        "mpp": mpp,
        "overlap": overlap,
        "min_tissue_fraction": float(min_tissue_fraction),
        "downsample": ds,
        "tissue_level": tissue.level,
        "tissue_downsample": tissue.downsample,
        "tissue_threshold": tissue.threshold,
    }

    cache_file = None
    if cache_dir is not None:
        key = _cache_key(path, tissue, {k: v for k, v in params.items() if k != "slide"})
        cache_file = Path(cache_dir) / f"{Path(path).stem}-{key[:24]}.npz"
        cached = _load_cached(cache_file, path)
        if cached is not None:
            return cached
    grid = _scan_slide(slide, tissue, params, min_tissue_fraction, skip_empty)
    if cache_file is not None and len(grid):  # an empty grid (skip_empty) is not cached
        grid.save(cache_file)
        logger.debug("slide %r: patch grid of %d patches cached in %s", path, len(grid), cache_file)
    return grid
