"""Ignite handlers shared by the bundles: slide maps, tile labels, sampler epochs, round selection, MLflow."""

from __future__ import annotations

from mixsup_monai.handlers.lazy import LazyHandler
from mixsup_monai.handlers.mlflow_rounds import MLflowRoundLogger
from mixsup_monai.handlers.round_heatmaps import RoundHeatmapSaver
from mixsup_monai.handlers.round_selection import (
    RoundEarlyStopping,
    RoundSelection,
    SelectionMode,
    flatten_record,
    read_selection,
    select_round,
    write_rounds_table,
)
from mixsup_monai.handlers.sampler_epoch import SamplerEpochSetter
from mixsup_monai.handlers.slide_map_saver import SlideMapSaver
from mixsup_monai.handlers.tile_label_saver import TileLabelSaver

__all__ = [
    "LazyHandler",
    "MLflowRoundLogger",
    "RoundEarlyStopping",
    "RoundHeatmapSaver",
    "RoundSelection",
    "SamplerEpochSetter",
    "SelectionMode",
    "SlideMapSaver",
    "TileLabelSaver",
    "flatten_record",
    "read_selection",
    "select_round",
    "write_rounds_table",
]
