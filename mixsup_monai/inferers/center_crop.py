"""An inferer that runs the network on an input with context and returns the centre of its output."""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["CenterCropInferer"]


class CenterCropInferer(Inferer):
    """``network(inputs)[..., margin:-margin, margin:-margin]``: supervise only the centre of the output.

    LSR losses only constrain how much of each class a block holds, not where. Trained on exactly the
    block, a fully convolutional network learns to put a block's required class fraction on its
    border pixels, which zero padding makes identifiable: at inference every sliding window then
    paints a frame of that class (a grid of artefacts on the slide). With blocks read with ``margin``
    pixels of context (``LoadSlideRegiond(context=margin)``) and the loss on the centre only, the block
    border is ordinary tissue to the network.

    Args:
        margin: pixels removed from each side of every spatial dimension of the output (0 = no crop).

    Shapes:
        inputs: ``(B, C, H + 2m, W + 2m)``; returns ``(B, L, H, W)``.
    """

    def __init__(self, margin: int = 0):
        super().__init__()
        if margin < 0:
            raise ValueError(f"CenterCropInferer: margin must be >= 0, got {margin}")
        self.margin = int(margin)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        outputs = network(inputs, *args, **kwargs)
        if self.margin == 0:
            return outputs
        m = self.margin
        if min(outputs.shape[2:]) <= 2 * m:
            raise ValueError(f"CenterCropInferer: output {tuple(outputs.shape)} is too small for a margin of {m}")
        return outputs[(..., *[slice(m, -m)] * (outputs.ndim - 2))]
