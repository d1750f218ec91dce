"""Heat-map and label-map overlays on RGB slide images, saved as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["heatmap_overlay", "label_overlay", "save_png", "DEFAULT_CLASS_COLOURS"]

#: colours of class indices 0, 1, 2, ... in label overlays (class 0 is usually background: transparent).
DEFAULT_CLASS_COLOURS = (
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
)


def _as_hwc_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)
    if image.dtype != np.uint8:
        image = np.clip(image * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return image


def heatmap_overlay(
    image: np.ndarray, probability: np.ndarray, alpha: float = 0.5, colormap: str = "jet"
) -> np.ndarray:
    """Blend a probability map onto an image, transparent where the probability is ~0.

    Args:
        image: ``(H, W, 3)`` or ``(3, H, W)`` RGB, uint8 or float in [0, 1].
        probability: ``(H, W)`` values in [0, 1] on the same grid.
        alpha: opacity at probability 1.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    import matplotlib

    rgb = _as_hwc_uint8(image).astype(np.float32)
    prob = np.clip(np.asarray(probability, dtype=np.float32), 0, 1)
    if prob.shape != rgb.shape[:2]:
        raise ValueError(f"heatmap_overlay: probability {prob.shape} and image {rgb.shape[:2]} sizes differ")
    colours = matplotlib.colormaps[colormap](prob)[..., :3] * 255.0
    weight = (alpha * prob)[..., None]
    return np.clip(rgb * (1 - weight) + colours * weight, 0, 255).astype(np.uint8)


def label_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    colours: Sequence[Sequence[int]] = DEFAULT_CLASS_COLOURS,
    alpha: float = 0.45,
    transparent: Sequence[int] = (0, 255),
) -> np.ndarray:
    """Tint an image with one colour per class index; ``transparent`` classes stay untinted."""
    rgb = _as_hwc_uint8(image).astype(np.float32)
    labels = np.asarray(labels)
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"label_overlay: labels {labels.shape} and image {rgb.shape[:2]} sizes differ")
    out = rgb.copy()
    for value in np.unique(labels):
        if int(value) in transparent:
            continue
        colour = np.asarray(colours[int(value) % len(colours)], np.float32)
        where = labels == value
        out[where] = rgb[where] * (1 - alpha) + colour * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Save an ``(H, W)`` or ``(H, W, 3)`` uint8 array as PNG (folders created)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)
    return path
