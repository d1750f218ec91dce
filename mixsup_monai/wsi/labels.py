"""Label maps: per-pixel class masks of a slide level (uint8, value = class index, 255 = unknown / ignore)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["IGNORE_INDEX", "crop_label_map", "read_label_map"]

#: label-map value of unknown / ignored pixels.
IGNORE_INDEX = 255


def read_label_map(path: str | Path) -> np.ndarray:
    """Read a label-map mask (PNG / TIFF, one channel, uint8, value = class index, 255 = ignore) as ``(H, W)``."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode not in ("L", "P", "1"):
            raise ValueError(
                f"mask {str(path)!r}: expected a single-channel uint8 label map (PIL mode 'L' or 'P'), "
                f"got mode {img.mode!r}"
            )
        return np.asarray(img, dtype=np.uint8)


def crop_label_map(
    label_map: np.ndarray, downsample: float, location: Sequence[int], size: Sequence[int], out_size: Sequence[int]
) -> np.ndarray:
    """The part of a label map under a level-0 box, resized (nearest) to ``out_size``.

    Args:
        label_map: ``(H, W)`` uint8 label map of a slide level whose downsample is ``downsample``.
        downsample: level-0 pixels per label-map pixel.
        location: level-0 ``(x, y)`` of the box.
        size: level-0 ``(w, h)`` of the box.
        out_size: ``(W, H)`` of the result.

    Returns:
        ``(H_out, W_out)`` uint8; pixels outside the label map are 255 (ignore).
    """
    out_w, out_h = int(out_size[0]), int(out_size[1])
    # centres of the output pixels, mapped to label-map pixels: nearest neighbour without aliasing shifts
    # floor, not truncation: a centre at -0.5 lies outside the map (a box starting left of it, e.g. a centred patch)
    xs = np.floor((location[0] + (np.arange(out_w) + 0.5) * size[0] / out_w) / downsample).astype(np.int64)
    ys = np.floor((location[1] + (np.arange(out_h) + 0.5) * size[1] / out_h) / downsample).astype(np.int64)
    out = np.full((out_h, out_w), 255, np.uint8)
    valid_x = (xs >= 0) & (xs < label_map.shape[1])
    valid_y = (ys >= 0) & (ys < label_map.shape[0])
    out[np.ix_(valid_y, valid_x)] = label_map[np.ix_(ys[valid_y], xs[valid_x])]
    return out
