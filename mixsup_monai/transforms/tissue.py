"""Restricting slide-level predictions to tissue: glass and pen marks are background, whatever the network says."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scipy import ndimage as ndi

from mixsup_monai.wsi.tissue import tissue_pixels

__all__ = ["RestrictToTissued", "RestrictToTissueD", "RestrictToTissueDict", "tissue_region"]


def tissue_region(image: torch.Tensor | np.ndarray, closing: int = 2) -> np.ndarray:
    """``(H, W)`` bool tissue region of a ``(3, H, W)`` image in [0, 1] (or uint8), holes inside tissue filled.

    The pixel rules of :func:`~mixsup_monai.wsi.tissue.tissue_pixels` (stain, glass, ink), then a
    binary closing of ``closing`` pixels so nuclei-free gaps inside tissue stay tissue.
    """
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"tissue_region: expected a (3, H, W) image, got shape {array.shape}")
    rgb = array.transpose(1, 2, 0)
    if rgb.dtype != np.uint8:
        rgb = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    region = tissue_pixels(rgb)
    if closing > 0:  # on an edge-padded copy: a closing next to the border would erode tissue cut by the border
        padded = np.pad(region, closing, mode="edge")
        region = ndi.binary_closing(padded, iterations=closing)[closing:-closing, closing:-closing]
    return ndi.binary_fill_holes(region)


class RestrictToTissued(MapTransform):
    """Set class probabilities outside tissue to the background class.

    Networks trained on tissue blocks extrapolate arbitrarily on glass (a sliding window's border on
    blank glass can look "dense"); pathology pipelines predict on tissue only. Expects ``pred`` as
    ``(C, H, W)`` probabilities on the grid of ``image`` ``(3, H, W)``.

    Args:
        keys: prediction keys.
        image_key: the image the tissue region is computed from.
        background_index: the class given to non-tissue pixels.
        closing: closing radius in pixels (see :func:`tissue_region`).
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        image_key: str = "image",
        background_index: int = 0,
        closing: int = 2,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.background_index = background_index
        self.closing = closing

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        outside = torch.from_numpy(~tissue_region(d[self.image_key], self.closing))
        for key in self.key_iterator(d):
            pred = d[key].clone()
            outside_pred = outside.to(pred.device).expand_as(pred)
            background = torch.zeros(pred.shape[0], 1, 1, dtype=pred.dtype, device=pred.device)
            background[self.background_index] = 1
            d[key] = torch.where(outside_pred, background.expand_as(pred), pred)
        return d


RestrictToTissueD = RestrictToTissueDict = RestrictToTissued
