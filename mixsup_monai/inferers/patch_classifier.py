"""A patch classifier as a dense map: each window's class scores painted over the window's pixels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer

__all__ = ["PatchClassifierInferer"]


class PatchClassifierInferer(SlidingWindowInferer):
    """Slide a ``(B, 3, p, p) -> (B, C)`` patch classifier over an image and paint its scores: ``(B, C, H, W)``.

    MONAI's sliding window places, pads and blends the windows (``overlap``, ``mode`` as for
    :class:`~monai.inferers.SlidingWindowInferer`); the classifier's scores of a window are its value at every
    pixel of the window, so with ``overlap=0`` each pixel gets the scores of the one patch that covers it, and
    with overlap the (weighted) mean over the patches. The scores are the network's outputs (logits): apply the
    activation after, as for a segmentation network.

    Args:
        patch_size: the classifier's input edge ``p`` in pixels.
        overlap: fraction of a window shared with its neighbour.
        sw_batch_size: windows per network call.
        mode: ``"constant"`` (mean of overlapping windows) or ``"gaussian"``.
        kwargs: other :class:`~monai.inferers.SlidingWindowInferer` arguments.
    """

    def __init__(
        self, patch_size: int = 224, overlap: float = 0.0, sw_batch_size: int = 64, mode: str = "constant", **kwargs
    ):
        super().__init__(roi_size=int(patch_size), sw_batch_size=sw_batch_size, overlap=overlap, mode=mode, **kwargs)
        self.patch_size = int(patch_size)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        p = self.patch_size

        def painted(windows: torch.Tensor) -> torch.Tensor:
            scores = network(windows, *args, **kwargs)
            if not torch.is_tensor(scores) or scores.ndim != 2 or scores.shape[0] != windows.shape[0]:
                shape = tuple(scores.shape) if torch.is_tensor(scores) else type(scores).__name__
                raise ValueError(
                    f"PatchClassifierInferer: the network must map (B, 3, {p}, {p}) patches to (B, C) scores, "
                    f"got {shape}"
                )
            # a real copy: the sliding window weights its outputs in place
            return scores[:, :, None, None].repeat(1, 1, windows.shape[2], windows.shape[3])

        return super().__call__(inputs, painted)
