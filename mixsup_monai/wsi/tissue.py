"""Tissue detection at a low pyramid level: saturation threshold with pen, glass and dust rules, cleaned in microns."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from monai.utils import StrEnum, look_up_option

from mixsup_monai.wsi.reader import Slide, open_slide

__all__ = [
    "TissueMethod",
    "TissueMask",
    "detect_tissue",
    "is_tissue",
    "save_tissue_overlay",
    "saturation",
    "tissue_pixels",
    "DEFAULT_SATURATION_THRESHOLD",
    "OTSU_THRESHOLD_RANGE",
]

logger = logging.getLogger(__name__)

#: Saturation (0-255) above which a pixel counts as stained when no Otsu threshold is computed (tiles).
DEFAULT_SATURATION_THRESHOLD = 20.0
#: Otsu thresholds are clamped into this range: on a slide with no tissue Otsu splits glass noise
#: (threshold ~1-5), on a slide filled with tissue it splits pale from dense stain (~80+).
OTSU_THRESHOLD_RANGE = (15.0, 60.0)
#: Pixel rules (8-bit RGB), see :func:`tissue_pixels`.
_GLASS_MIN_CHANNEL = 225  # all channels brighter than this: glass / bright background
_DARK_MAX_CHANNEL = 90  # all channels darker than this (and not blue-dominant hematoxylin): ink, dust, debris
_RED_INK_STRICT = 10  # red ink pixel: R - G > 60 and B - G < (R - G) / 10 (hue within ~6 degrees of pure red)
_RED_INK_LOOSE = 4  # red-ish pixel, counted for pen strokes only: R - G > 40 and B - G < (R - G) / 4
_INK_COMPONENT_FRACTION = 0.5  # stained blobs made mostly of ink are pen strokes, fringes included
_CHUNK_ROWS = 256  # rows of the low-resolution view processed at once by the pixel rules
#: Clean-up sizes used when the slide's MPP is unknown (mask pixels).
_FALLBACK_MIN_OBJECT_PX = 64
_FALLBACK_MAX_HOLE_PX = 64


class TissueMethod(StrEnum):
    """How the saturation threshold is chosen."""

    OTSU_SATURATION = "otsu_saturation"  # Otsu on the median-filtered saturation, clamped to OTSU_THRESHOLD_RANGE
    FIXED_SATURATION = "fixed_saturation"  # ``threshold`` (default DEFAULT_SATURATION_THRESHOLD)


@dataclass
class TissueMask:
    """A boolean tissue mask covering the whole slide.

    Attributes:
        mask: ``(H, W)`` bool, True = tissue.
        level: pyramid level that was read to compute it (for a user mask: the level closest in size).
        downsample: level-0 pixels per mask pixel (may differ from the level's own downsample when the
            level was resized to fit ``max_size``).
        threshold: saturation threshold used (0-255), ``None`` for a user-supplied mask.
        params: the detection parameters, for the record and for grid cache keys.
    """

    mask: np.ndarray
    level: int
    downsample: float
    threshold: float | None
    params: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Tissue fraction of the whole slide area."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the mask."""
        return tuple(self.mask.shape)  # type: ignore[return-value]

    def to_dict(self) -> dict:
        """JSON-able summary (without the mask pixels)."""
        return {
            "level": self.level,
            "downsample": self.downsample,
            "threshold": self.threshold,
            "fraction": self.fraction,
            "shape": list(self.shape),
            "params": dict(self.params),
        }


def _as_rgb(rgb: np.ndarray, what: str = "rgb") -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"{what}: expected an (H, W, 3) or (H, W, 4) RGB(A) image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise TypeError(f"{what}: expected uint8 RGB values 0-255, got dtype {rgb.dtype}")
    return rgb[..., :3]


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation ``(max - min) / max`` scaled to 0-255.

    Args:
        rgb: ``(H, W, 3)`` uint8.

    Returns:
        ``(H, W)`` uint8.
    """
    rgb = _as_rgb(rgb)
    out = np.empty(rgb.shape[:2], np.uint8)
    for r0 in range(0, rgb.shape[0], _CHUNK_ROWS):  # row chunks: temporaries stay small on 2k x 2k views
        chunk = rgb[r0 : r0 + _CHUNK_ROWS]
        mx = chunk.max(axis=-1).astype(np.int32)
        mn = chunk.min(axis=-1).astype(np.int32)
        out[r0 : r0 + _CHUNK_ROWS] = (mx - mn) * 255 // np.maximum(mx, 1)
    return out


def _pixel_classes(rgb: np.ndarray, saturation_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(stained, stroke_ink, excluded)`` bool masks of the pixel rules, computed in row chunks."""
    shape = rgb.shape[:2]
    stained, stroke_ink, excluded = np.empty(shape, bool), np.empty(shape, bool), np.empty(shape, bool)
    for r0 in range(0, shape[0], _CHUNK_ROWS):
        rows = slice(r0, r0 + _CHUNK_ROWS)
        c = rgb[rows].astype(np.int32)
        r, g, b = c[..., 0], c[..., 1], c[..., 2]
        mx, mn = c.max(axis=-1), c.min(axis=-1)
        stained[rows] = (mx - mn) * 255 > saturation_threshold * np.maximum(mx, 1)
        rg = r - g
        dark = (mx < _DARK_MAX_CHANNEL) & ~((b > r) & (b > g))
        ink = (g > r) | ((rg > 60) & (_RED_INK_STRICT * (b - g) < rg)) | dark
        stroke_ink[rows] = ink | ((rg > 40) & (_RED_INK_LOOSE * (b - g) < rg))
        excluded[rows] = ink | (mn > _GLASS_MIN_CHANNEL)
    return stained, stroke_ink, excluded


def tissue_pixels(
    rgb: np.ndarray,
    saturation_threshold: float = DEFAULT_SATURATION_THRESHOLD,
    ink_component_fraction: float = _INK_COMPONENT_FRACTION,
) -> np.ndarray:
    """The pixel classifier shared by :func:`detect_tissue` and :func:`is_tissue` (H&E).

    A pixel is tissue when it is stained and none of the exclusion rules fires:

    * stained: HSV saturation (0-255) ``> saturation_threshold`` -- glass is grey/white, H&E is not;
    * glass / bright background: every channel ``> 225``;
    * dust, debris, dark ink, black padding: every channel ``< 90`` unless blue dominates (``B > R``
      and ``B > G``: dense hematoxylin, e.g. nuclei and keratin, is that dark at high resolution);
    * green / blue ink: ``G > R`` (hematoxylin and eosin both absorb green most, so in H&E the green
      channel stays below red: purple and pink; green, blue and blue-black inks have ``G >= R``);
    * red ink: ``R - G > 60`` and ``B - G < (R - G) / 10`` -- a hue within ~6 degrees of pure red; eosin
      is pink-magenta (blue clearly above green), though strongly eosinophilic collagen comes close,
      hence the strict cut-off;
    * pen strokes: a connected stained blob in which more than ``ink_component_fraction`` of the pixels
      are ink (rules above, plus the looser red ``B - G < (R - G) / 4``) is dropped as a whole: the
      blurred edges of a stroke are pink or purple and would pass the pixel rules. Tuned on the named
      tiles of ``../shared/data/tiles`` (green pen, red + black pen, marker line).

    The ink rules assume H&E; on IHC or special stains blue/green tissue would be rejected.

    Args:
        rgb: ``(H, W, 3|4)`` uint8 RGB(A) image.
        saturation_threshold: stained-pixel threshold on the 0-255 saturation.
        ink_component_fraction: ink share above which a blob is a pen stroke.

    Returns:
        ``(H, W)`` bool mask.
    """
    from scipy import ndimage as ndi

    rgb = _as_rgb(rgb)
    stained, stroke_ink, excluded = _pixel_classes(rgb, saturation_threshold)
    labels, n = ndi.label(stained)
    if n:
        total = np.bincount(labels.ravel(), minlength=n + 1)
        inked = np.bincount(labels[stroke_ink & stained], minlength=n + 1)
        stroke = inked > ink_component_fraction * np.maximum(total, 1)
        stroke[0] = True
        stained &= ~stroke[labels]
    del labels
    stained &= ~excluded
    return stained


def is_tissue(
    rgb: np.ndarray, min_fraction: float = 0.1, saturation_threshold: float = DEFAULT_SATURATION_THRESHOLD
) -> bool:
    """Whether an RGB tile shows tissue: at least ``min_fraction`` of its pixels pass :func:`tissue_pixels`.

    Args:
        rgb: ``(H, W, 3|4)`` uint8 tile.
        min_fraction: minimum tissue share of the tile.
        saturation_threshold: see :func:`tissue_pixels`; a single tile has no glass/tissue bimodality
            to compute Otsu on, so a fixed threshold is used.
    """
    if not 0 <= min_fraction <= 1:
        raise ValueError(f"is_tissue: min_fraction must be in [0, 1], got {min_fraction!r}")
    return float(tissue_pixels(rgb, saturation_threshold).mean()) >= min_fraction


def _otsu_threshold(rgb: np.ndarray) -> float:
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    sat = ndi.median_filter(saturation(rgb), size=5)
    t = float(threshold_otsu(sat)) if sat.min() != sat.max() else 0.0
    lo, hi = OTSU_THRESHOLD_RANGE
    return float(min(max(t, lo), hi))


def _thumbnail(slide: Slide, max_size: int, max_read_pixels: int) -> tuple[np.ndarray, int, float]:
    """``(rgb, level, downsample)``: the finest usable level whose long side is <= max_size, else a scaled read."""
    info = slide.info
    # Levels that do not decode (``info.skipped_levels``) would give a black or false-colour mask.
    candidates = [lv for lv in info.usable_levels if max(info.level_dimensions[lv]) <= max_size]
    width, height = info.level_dimensions[0]
    if candidates:
        level = min(candidates)
        rgb = slide.read_level(level, max_pixels=max_read_pixels)
    else:
        scale = max_size / max(width, height)
        out_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        level = slide.level_for_downsample(min(width / out_size[0], height / out_size[1]))
        try:
            rgb = slide.read_scaled((0, 0), (width, height), out_size, max_read_pixels=max_read_pixels)
        except ValueError as e:
            raise ValueError(
                f"slide {info.path!r}: tissue detection reads at most {max_read_pixels} px but the slide has no "
                f"level with a long side <= {max_size} px (levels {list(info.level_dimensions)}). {e}"
            ) from e
    downsample = (width / rgb.shape[1] + height / rgb.shape[0]) / 2
    return rgb, level, float(downsample)


def _load_user_mask(user_mask: str | os.PathLike | np.ndarray) -> np.ndarray:
    if isinstance(user_mask, (str, os.PathLike)):
        p = Path(user_mask)
        if not p.exists():
            raise FileNotFoundError(f"tissue mask {str(p)!r} does not exist")
        if p.suffix.lower() == ".npy":
            arr = np.load(p)
        else:
            from PIL import Image

            with Image.open(p) as im:
                arr = np.asarray(im.convert("L") if im.mode not in ("1", "L", "I", "I;16") else im)
    else:
        arr = np.asarray(user_mask)
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"tissue mask: expected a 2-D (H, W) image or array, got shape {arr.shape}")
    return arr > 0


def _user_tissue_mask(slide: Slide, user_mask) -> TissueMask:
    mask = _load_user_mask(user_mask)
    (width, height), (mh, mw) = slide.dimensions, mask.shape
    ds_x, ds_y = width / mw, height / mh
    # the mask height implied by its width must match within rounding (1 px or 2 %): else another slide's mask
    if abs(height / ds_x - mh) > max(1.0, 0.02 * mh):
        raise ValueError(
            f"slide {slide.info.path!r}: tissue mask of {mw} x {mh} px does not have the slide's aspect ratio "
            f"({width} x {height} px level 0); expected a mask of the whole slide at any down-sampling"
        )
    downsample = (ds_x + ds_y) / 2
    level = slide.level_for_downsample(downsample)
    name = str(user_mask) if isinstance(user_mask, (str, os.PathLike)) else "array"
    return TissueMask(mask=mask, level=level, downsample=float(downsample), threshold=None, params={"user_mask": name})


def _clean_mask(
    mask: np.ndarray,
    path: str,
    mask_mpp: float | None,
    downsample: float,
    sizes_um2: tuple[float, float],
    sizes_px: tuple[int | None, int | None],
) -> tuple[np.ndarray, int, int]:
    """``(mask, min_object_size_px, max_hole_size_px)``: the mask opened, small objects and holes removed.

    Sizes in mask pixels are the given ones, else the um^2 areas converted at ``mask_mpp``; without a known MPP
    the 64 px fallbacks are used and the choice is logged.
    """
    from skimage import morphology

    mask = morphology.opening(mask, morphology.disk(1))
    min_object_size_px, max_hole_size_px = sizes_px
    if min_object_size_px is None:
        min_object_size_px = _FALLBACK_MIN_OBJECT_PX if mask_mpp is None else int(sizes_um2[0] / mask_mpp**2)
    if max_hole_size_px is None:
        max_hole_size_px = _FALLBACK_MAX_HOLE_PX if mask_mpp is None else int(sizes_um2[1] / mask_mpp**2)
    if mask_mpp is None:
        logger.info(
            "slide %r: MPP unknown, tissue clean-up uses pixel sizes (objects < %d px, holes < %d px at 1/%.1f)",
            path,
            min_object_size_px,
            max_hole_size_px,
            downsample,
        )
    if min_object_size_px > 0:
        mask = morphology.remove_small_objects(mask, max_size=min_object_size_px)
    if max_hole_size_px > 0:
        mask = morphology.remove_small_holes(mask, max_size=max_hole_size_px)
    return mask, min_object_size_px, max_hole_size_px


def detect_tissue(
    slide: Slide | str | os.PathLike,
    max_size: int = 2048,
    method: str = TissueMethod.OTSU_SATURATION,
    threshold: float | None = None,
    min_object_size_um2: float = 5000.0,
    max_hole_size_um2: float = 5000.0,
    min_object_size_px: int | None = None,
    max_hole_size_px: int | None = None,
    user_mask: str | os.PathLike | np.ndarray | None = None,
    max_read_pixels: int = 2**27,
) -> TissueMask:
    """Find the tissue of a slide on a low-resolution view of the whole slide.

    Steps: read the finest level whose long side is ``<= max_size`` (or, when no level is that small,
    a scaled read of the coarsest sufficient level, refused above ``max_read_pixels``); threshold the
    saturation (Otsu on the 5x5-median-filtered saturation, clamped to :data:`OTSU_THRESHOLD_RANGE`, or a
    fixed ``threshold``); drop glass, dust and pen ink with the rules of :func:`tissue_pixels`; open
    with a 3x3 disk; remove objects smaller than ``min_object_size_um2`` and fill holes smaller than
    ``max_hole_size_um2`` (areas in um^2 when the slide's MPP is known; ``*_px`` values, in mask pixels,
    override them and are used -- 64 px by default -- when it is not).

    Args:
        slide: an open :class:`~mixsup_monai.wsi.reader.Slide` or a path (opened and closed here).
        max_size: long side, in pixels, of the view the mask is computed on.
        method: ``"otsu_saturation"`` or ``"fixed_saturation"``.
        threshold: saturation threshold (0-255); when given it is used whatever the method.
        min_object_size_um2: smallest kept tissue piece.
        max_hole_size_um2: largest hole filled inside tissue (lumens bigger than this stay holes).
        min_object_size_px: ``min_object_size_um2`` in mask pixels, overriding it.
        max_hole_size_px: ``max_hole_size_um2`` in mask pixels, overriding it.
        user_mask: a tissue mask to use instead of detection: path (PNG/TIFF/``.npy``) or array, any
            non-zero value = tissue, covering the whole slide at any down-sampling (same aspect ratio).
        max_read_pixels: most pixels decoded for the low-resolution view.

    Returns:
        :class:`TissueMask` (possibly empty: the patch grid raises the no-tissue error).
    """
    if not isinstance(slide, Slide):
        with open_slide(slide) as opened:
            return detect_tissue(
                opened,
                max_size=max_size,
                method=method,
                threshold=threshold,
                min_object_size_um2=min_object_size_um2,
                max_hole_size_um2=max_hole_size_um2,
                min_object_size_px=min_object_size_px,
                max_hole_size_px=max_hole_size_px,
                user_mask=user_mask,
                max_read_pixels=max_read_pixels,
            )
    if user_mask is not None:
        return _user_tissue_mask(slide, user_mask)
    method = look_up_option(method, TissueMethod)
    if max_size < 16:
        raise ValueError(f"detect_tissue: max_size must be >= 16 px, got {max_size!r}")
    rgb, level, downsample = _thumbnail(slide, max_size, max_read_pixels)
    if threshold is None:
        threshold = _otsu_threshold(rgb) if method == TissueMethod.OTSU_SATURATION else DEFAULT_SATURATION_THRESHOLD
    mask_mpp = None if slide.info.mpp is None else slide.info.mpp * downsample
    mask, min_object_size_px, max_hole_size_px = _clean_mask(
        tissue_pixels(rgb, threshold),
        slide.info.path,
        mask_mpp,
        downsample,
        (min_object_size_um2, max_hole_size_um2),
        (min_object_size_px, max_hole_size_px),
    )
    params = {
        "method": method.value,
        "max_size": max_size,
        "threshold": float(threshold),
        "min_object_size_px": int(min_object_size_px),
        "max_hole_size_px": int(max_hole_size_px),
        "mask_mpp": mask_mpp,
    }
    return TissueMask(mask=mask, level=level, downsample=downsample, threshold=float(threshold), params=params)


def save_tissue_overlay(
    slide: Slide | str | os.PathLike,
    tissue: TissueMask,
    png_path: str | os.PathLike,
    grid=None,
    max_size: int = 2048,
) -> Path:
    """Write a thumbnail PNG for a person to check: tissue tinted green with its contour, patch boxes in blue.

    Args:
        slide: open slide or path.
        tissue: the mask to show.
        png_path: output PNG.
        grid: optional :class:`~mixsup_monai.wsi.grid.PatchGrid` whose patches are outlined.
        max_size: long side of the overlay.

    Returns:
        ``png_path`` as a ``Path``.
    """
    from PIL import Image, ImageDraw
    from scipy import ndimage as ndi

    if not isinstance(slide, Slide):
        with open_slide(slide) as opened:
            return save_tissue_overlay(opened, tissue, png_path, grid=grid, max_size=max_size)
    width, height = slide.dimensions
    scale = min(1.0, max_size / max(tissue.shape[1], tissue.shape[0]))
    out_size = (max(1, round(tissue.shape[1] * scale)), max(1, round(tissue.shape[0] * scale)))
    rgb = slide.read_scaled((0, 0), (width, height), out_size, max_read_pixels=2**27).astype(np.float32)
    mask = np.asarray(Image.fromarray(tissue.mask).resize(out_size, Image.Resampling.NEAREST))
    tint = np.array([0, 200, 0], np.float32)
    rgb[mask] = 0.65 * rgb[mask] + 0.35 * tint
    contour = mask & ~ndi.binary_erosion(mask, iterations=max(1, round(max(out_size) / 1000)))
    rgb[contour] = (0, 140, 0)
    image = Image.fromarray(rgb.astype(np.uint8))
    if grid is not None and len(grid):
        draw = ImageDraw.Draw(image)
        fx, fy = out_size[0] / width, out_size[1] / height
        side = grid.patch_size * grid.downsample
        for x, y in zip(grid.x.tolist(), grid.y.tolist()):
            draw.rectangle([x * fx, y * fy, (x + side) * fx - 1, (y + side) * fy - 1], outline=(30, 60, 255))
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    image.save(png_path)
    return png_path
