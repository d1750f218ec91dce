"""Inferers: blocks with context (the loss and the map use the centre), patch classifiers as maps, streamed slides."""

from __future__ import annotations

from mixsup_monai.inferers.center_crop import CenterCropInferer
from mixsup_monai.inferers.context_sliding_window import ContextSlidingWindowInferer
from mixsup_monai.inferers.patch_classifier import PatchClassifierInferer
from mixsup_monai.inferers.slide_map_sinks import (
    ArraySink,
    GeoJSONSink,
    MapEncoding,
    PyramidalTiffSink,
    SlideMapSink,
    ThumbnailSink,
    map_to_uint8,
)
from mixsup_monai.inferers.slide_map_writer import SlideMapWriter
from mixsup_monai.inferers.streaming_slide import SlideMapResult, StreamingSlideInferer

__all__ = [
    "ArraySink",
    "GeoJSONSink",
    "CenterCropInferer",
    "ContextSlidingWindowInferer",
    "MapEncoding",
    "PatchClassifierInferer",
    "PyramidalTiffSink",
    "SlideMapResult",
    "SlideMapSink",
    "SlideMapWriter",
    "StreamingSlideInferer",
    "ThumbnailSink",
    "map_to_uint8",
]
