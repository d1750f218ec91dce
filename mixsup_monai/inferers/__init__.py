"""Inferers for networks trained on blocks with context: the loss and the slide map use the centre only."""

from __future__ import annotations

from mixsup_monai.inferers.center_crop import CenterCropInferer
from mixsup_monai.inferers.context_sliding_window import ContextSlidingWindowInferer

__all__ = ["CenterCropInferer", "ContextSlidingWindowInferer"]
