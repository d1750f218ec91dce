"""Slide inference to the files people open: a pyramidal TIFF overlay, a PNG thumbnail and QuPath GeoJSON."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import optional_import

from mixsup_monai.inferers.slide_map_sinks import GeoJSONSink, MapEncoding, PyramidalTiffSink, ThumbnailSink
from mixsup_monai.inferers.streaming_slide import SlideMapResult, StreamingSlideInferer
from mixsup_monai.visualize.overlay import heatmap_overlay, save_png
from mixsup_monai.wsi.cache import get_slide
from mixsup_monai.wsi.tissue import detect_tissue

__all__ = ["SlideMapWriter"]

tqdm, _has_tqdm = optional_import("tqdm", name="tqdm")
logger = logging.getLogger(__name__)


class SlideMapWriter:
    """Run a :class:`StreamingSlideInferer` over slides and write, per slide, in ``output_dir``:

    * ``<name>_prob.tif``: the probability of class ``channel`` as a one-channel pyramidal TIFF (0..255), at the
      map's resolution with its MPP -- QuPath, OpenSlide and cuCIM open it; in QuPath add it as an overlay;
    * ``<name>_prob.png``: a thumbnail of it, ``<name>_classes.png``: the class map in colours (several channels),
      ``<name>_overlay.png``: the probability as a heat map over the slide's thumbnail;
    * ``<name>.geojson``: the class regions as QuPath annotations (import onto the slide).

    Memory stays flat in the slide's size (the inferer's band, a row of TIFF tiles, the reduced maps).

    Args:
        inferer: the streaming inferer (window geometry, ``downsample``, activation).
        network: the network, put in eval mode here.
        output_dir: output folder.
        classes: class names by channel (class 0 is background in the GeoJSON); a one-channel network's
            probability is class 1 of ``[background, foreground]``.
        channel: probability channel of the TIFF and the thumbnail.
        thumbnail_size: long side of the PNGs.
        geojson_max_size: long side of the reduced class map the polygons are traced on.
        skip_glass: detect tissue first and run only windows with tissue.
    """

    def __init__(
        self,
        inferer: StreamingSlideInferer,
        network: torch.nn.Module,
        output_dir: str | os.PathLike,
        classes: Sequence[str],
        channel: int = 1,
        thumbnail_size: int = 1024,
        geojson_max_size: int = 4096,
        skip_glass: bool = True,
    ):
        self.inferer, self.network = inferer, network
        self.output_dir = Path(output_dir)
        self.classes = [str(c) for c in classes]
        self.channel, self.thumbnail_size, self.geojson_max_size = int(channel), int(thumbnail_size), geojson_max_size
        self.skip_glass = bool(skip_glass)

    def sinks(self, name: str, one_channel: bool) -> list:
        """The sinks of one slide (``one_channel``: a sigmoid network, whose only channel is the probability); the
        second is the probability thumbnail, which the overlay is made from."""
        out, channel = self.output_dir, 0 if one_channel else self.channel
        sinks = [
            PyramidalTiffSink(out / f"{name}_prob.tif", channel=channel),
            ThumbnailSink(out / f"{name}_prob.png", self.thumbnail_size, channel=channel),
            GeoJSONSink(out / f"{name}.geojson", self.classes, self.inferer.downsample, self.geojson_max_size),
        ]
        if not one_channel:  # the argmax of one channel says nothing
            sinks.append(ThumbnailSink(out / f"{name}_classes.png", self.thumbnail_size, encoding=MapEncoding.CLASS))
        return sinks

    def __call__(self, slide_path: str | os.PathLike) -> SlideMapResult:
        """Write one slide's files; the result's ``outputs`` are their paths."""
        slide = get_slide(os.fspath(slide_path))
        tissue = detect_tissue(slide) if self.skip_glass else None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        one_channel = self.inferer.activation == "sigmoid"
        name = Path(slide_path).stem
        sinks = self.sinks(name, one_channel)
        result = self.inferer(slide, self.network, sinks, tissue=tissue)
        result.outputs.append(self.overlay(slide, name, sinks[1].picture))
        logger.info(
            "%s: %d x %d map, %d windows run, %d glass windows skipped -> %s",
            Path(slide_path).name,
            *result.map_size,
            result.windows,
            result.skipped,
            ", ".join(Path(p).name for p in result.outputs),
        )
        return result

    def overlay(self, slide: Any, name: str, thumbnail: np.ndarray) -> Path:
        """``<name>_overlay.png``: the probability thumbnail (uint8) as a heat map over the slide read at its size."""
        height, width = thumbnail.shape
        rgb = slide.read_scaled(location=(0, 0), size=slide.dimensions, out_size=(width, height))
        probability = thumbnail.astype(np.float32) / 255.0
        return save_png(heatmap_overlay(rgb, probability, alpha=0.6), self.output_dir / f"{name}_overlay.png")

    def run(self, slides: Sequence[str | os.PathLike]) -> list[SlideMapResult]:
        """Every slide in turn (a progress bar over slides)."""
        self.network.eval()
        bar: Any = tqdm(slides, desc="slides", unit="slide") if _has_tqdm and len(slides) > 1 else slides
        return [self(path) for path in bar]
