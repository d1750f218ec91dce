"""Sliding-window inference for a network whose output is only supervised away from its input's border."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map
from monai.inferers import SlidingWindowInferer
from monai.utils import ensure_tuple_rep

__all__ = ["ContextSlidingWindowInferer"]

#: weight of a window's unsupervised border relative to the smallest weight of its centre: enough to
#: fill pixels no centre covers, too small to matter where one does.
BORDER_WEIGHT = 1e-4


class ContextSlidingWindowInferer(SlidingWindowInferer):
    """Slide inference with the windows of a network trained with :class:`CenterCropInferer`.

    Trained on blocks read with ``margin`` pixels of context and a loss on the centre only, the
    network's outputs within ``margin`` of a window's border were never supervised (an LSR network
    puts arbitrary class mass there). A plain :class:`~monai.inferers.SlidingWindowInferer` blends
    them into the map, as a grid of lines at the window stride. This inferer

    * weights each window by a Gaussian over its centre ``roi_size - 2 * margin`` (and a negligible
      weight, ``BORDER_WEIGHT``, on the border, so that no pixel is left without a prediction),
    * requires windows to overlap enough for the centres to tile the image
      (``overlap >= 2 * margin / roi_size``),
    * pads the input by ``margin`` (zeros, as :class:`~mixsup_monai.transforms.LoadSlideRegiond` reads
      beyond a slide) so that the slide's own border falls in a window centre, and crops it off again.

    Args:
        roi_size: window size, ``block_input_size + 2 * margin`` (int or per spatial dimension).
        margin: unsupervised border of a window, in pixels (``CenterCropInferer``'s margin).
        overlap: window overlap, at least ``2 * margin / min(roi_size)``.
        sigma_scale: Gaussian sigma relative to the centre's size.
        kwargs: other :class:`~monai.inferers.SlidingWindowInferer` arguments (``sw_batch_size``, ...).

    Shapes:
        inputs: ``(B, C, H, W)``; returns ``(B, L, H, W)``.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        margin: int,
        overlap: float = 0.5,
        sigma_scale: float = 0.125,
        **kwargs: Any,
    ):
        roi = tuple(int(r) for r in ensure_tuple_rep(roi_size, 2))
        margin = int(margin)
        if margin < 0 or min(roi) <= 2 * margin:
            raise ValueError(f"ContextSlidingWindowInferer: margin must be >= 0 and < roi_size / 2, got {margin} {roi}")
        if overlap < 2 * margin / min(roi):
            raise ValueError(
                f"ContextSlidingWindowInferer: overlap {overlap} leaves gaps between window centres; "
                f"expected >= 2 * margin / roi_size = {2 * margin / min(roi):.3f}"
            )
        for reserved in ("mode", "cache_roi_weight_map"):
            if reserved in kwargs:
                raise ValueError(f"ContextSlidingWindowInferer: {reserved!r} is fixed (a centre Gaussian)")
        super().__init__(roi_size=roi, overlap=overlap, mode="gaussian", sigma_scale=sigma_scale, **kwargs)
        self.margin = margin
        self.roi_weight_map = self.centre_weight_map(roi, margin, sigma_scale)

    @staticmethod
    def centre_weight_map(roi_size: Sequence[int], margin: int, sigma_scale: float = 0.125) -> torch.Tensor:
        """``roi_size`` blending weights: a Gaussian on the centre, ``BORDER_WEIGHT`` x its minimum on the border."""
        if margin == 0:
            return compute_importance_map(tuple(roi_size), mode="gaussian", sigma_scale=sigma_scale)
        centre_size = tuple(r - 2 * margin for r in roi_size)
        centre = compute_importance_map(centre_size, mode="gaussian", sigma_scale=sigma_scale)
        weights = torch.full(tuple(roi_size), float(centre.min()) * BORDER_WEIGHT)
        weights[(slice(margin, -margin),) * len(roi_size)] = centre
        return weights

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        m = self.margin
        if m == 0:
            return super().__call__(inputs, network, *args, **kwargs)
        padded = F.pad(inputs, (m, m) * (inputs.ndim - 2))
        outputs = super().__call__(padded, network, *args, **kwargs)
        return outputs[(..., *[slice(m, -m)] * (inputs.ndim - 2))]
