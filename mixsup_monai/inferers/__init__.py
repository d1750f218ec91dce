"""Inferers for networks trained on blocks with context: the loss and the slide map use the centre only."""

from __future__ import annotations

from mixsup_monai.inferers.center_crop import CenterCropInferer
from mixsup_monai.inferers.context_sliding_window import ContextSlidingWindowInferer
from mixsup_monai.inferers.slide_map_sinks import (
    ArraySink,
    MapEncoding,
    PyramidalTiffSink,
    SlideMapSink,
    ThumbnailSink,
    map_to_uint8,
)
from mixsup_monai.inferers.streaming_slide import SlideMapResult, StreamingSlideInferer

__all__ = [
    "ArraySink",
    "CenterCropInferer",
    "ContextSlidingWindowInferer",
    "MapEncoding",
    "PyramidalTiffSink",
    "SlideMapResult",
    "SlideMapSink",
    "StreamingSlideInferer",
    "ThumbnailSink",
    "map_to_uint8",
]
