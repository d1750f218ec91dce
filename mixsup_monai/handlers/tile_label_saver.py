"""Ignite handler saving each tile's label map (palette PNG) and its polygons (QuPath GeoJSON)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.utils import min_version, optional_import

from mixsup_monai.transforms.tile_io import region_of
from mixsup_monai.visualize.geojson import label_map_to_geojson, write_geojson
from mixsup_monai.visualize.overlay import DEFAULT_CLASS_COLOURS

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["TileLabelSaver"]

logger = logging.getLogger(__name__)


class TileLabelSaver:
    """Save, per tile of an evaluator's output, ``<name>_label.png`` and ``<name>.geojson`` in ``output_dir``.

    Expects the decollated output of a bundle's tile ``inference.json``: dicts whose ``label_key`` holds the
    ``(1, H, W)`` uint8 label of :class:`~mixsup_monai.transforms.TileLabeld` with the region's meta data (where
    :class:`~mixsup_monai.transforms.MonaiLabelOutputd` keeps it).
    The PNG keeps the label values (a palette PNG: values are ``channel_def`` indices, shown in colours); the
    GeoJSON has one Polygon per region and class in level-0 slide pixels, which QuPath imports onto the slide.
    A region of a slide (``location`` given) is named ``<slide>_x<x>_y<y>``. Under DDP every rank writes its tiles.

    Args:
        output_dir: output folder.
        classes: class names by label value (value 0 is background: no polygons).
        label_key: key of the label in the engine output.
    """

    def __init__(self, output_dir: str, classes: Sequence[str], label_key: str = "tile_label"):
        if isinstance(classes, str) or len(classes) < 2:
            raise ValueError(f"TileLabelSaver: classes must name background and at least one class, got {classes!r}")
        self.output_dir = Path(output_dir)
        self.classes = [str(c) for c in classes]
        self.label_key = label_key
        self.saved: list[Path] = []

    def attach(self, engine) -> None:
        if not engine.has_event_handler(self.iteration_completed, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)

    def iteration_completed(self, engine) -> None:
        outputs = engine.state.output
        for item in outputs if isinstance(outputs, list) else [outputs]:
            self.save(item[self.label_key])

    def save(self, label: torch.Tensor) -> list[Path]:
        """Write one tile's files; returns their paths."""
        from PIL import Image

        region = region_of(getattr(label, "meta", {}), label.shape[-2:])
        values = np.asarray(torch.as_tensor(label).cpu(), dtype=np.uint8).reshape(label.shape[-2:])
        name = Path(region["filename_or_obj"]).stem
        x, y = (round(v) for v in region["location"])
        if (x, y) != (0, 0):
            name = f"{name}_x{x}_y{y}"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        png = Image.fromarray(values)  # "L"; the palette makes it "P" with the same values
        palette = [channel for rgb in DEFAULT_CLASS_COLOURS for channel in rgb]
        png.putpalette(palette + [0] * (768 - len(palette)))
        label_path = self.output_dir / f"{name}_label.png"
        png.save(label_path)
        collection = label_map_to_geojson(
            values, self.classes, downsample=region["level_downsample"], origin=region["location"]
        )
        geojson_path = write_geojson(self.output_dir / f"{name}.geojson", collection)
        logger.info("%s: %d regions -> %s, %s", name, len(collection["features"]), label_path, geojson_path.name)
        self.saved += [label_path, geojson_path]
        return [label_path, geojson_path]
