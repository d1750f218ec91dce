"""Ignite handlers: saving slide maps, metrics over slides, per-epoch sampler state."""

from __future__ import annotations

from mixsup_monai.handlers.mlflow_rounds import MLflowRoundLogger
from mixsup_monai.handlers.round_heatmaps import RoundHeatmapSaver
from mixsup_monai.handlers.round_selection import RoundEarlyStopping, RoundSelection
from mixsup_monai.handlers.sampler_epoch import SamplerEpochSetter
from mixsup_monai.handlers.segmentation_metric import SegmentationMetricHandler
from mixsup_monai.handlers.slide_classification import SlideMetricsSaver, SlideResultSaver
from mixsup_monai.handlers.slide_map_saver import SlideMapSaver

__all__ = [
    "MLflowRoundLogger",
    "RoundEarlyStopping",
    "RoundHeatmapSaver",
    "RoundSelection",
    "SamplerEpochSetter",
    "SegmentationMetricHandler",
    "SlideMapSaver",
    "SlideMetricsSaver",
    "SlideResultSaver",
]
