"""Where a streamed slide map goes, band by band: an array, a pyramidal TIFF, a PNG thumbnail, QuPath GeoJSON."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.utils import StrEnum, look_up_option

from mixsup_monai.visualize.overlay import DEFAULT_CLASS_COLOURS, save_png
from mixsup_monai.wsi.pyramid import PyramidalTiffWriter, PyramidResample

__all__ = [
    "ArraySink",
    "GeoJSONSink",
    "MapEncoding",
    "PyramidalTiffSink",
    "SlideMapSink",
    "ThumbnailSink",
    "map_to_uint8",
]


class MapEncoding(StrEnum):
    """How a ``(L, h, w)`` map of class probabilities becomes one uint8 channel."""

    #: ``round(255 * p)`` of one channel (0 where no window was run)
    PROBABILITY = "probability"
    #: the argmax class index (``fill_class`` where no window was run)
    CLASS = "class"


def map_to_uint8(
    values: np.ndarray,
    covered: np.ndarray,
    encoding: str = MapEncoding.PROBABILITY,
    channel: int = 1,
    fill_class: int = 0,
) -> np.ndarray:
    """One uint8 channel of a band of a slide map.

    Args:
        values: ``(L, h, w)`` float probabilities (after the activation).
        covered: ``(h, w)`` bool, False where no window was run (glass skipped by the tissue mask).
        encoding: ``"probability"`` (channel ``channel`` scaled to 0..255) or ``"class"`` (argmax).
        channel: the probability channel (``"probability"``).
        fill_class: the value of uncovered pixels (``"class"``).

    Returns:
        ``(h, w)`` uint8.
    """
    encoding = look_up_option(encoding, MapEncoding)
    if encoding == MapEncoding.PROBABILITY:
        if not 0 <= channel < values.shape[0]:
            raise ValueError(f"map_to_uint8: channel {channel} does not exist in a map of {values.shape[0]} channels")
        out = np.rint(np.clip(values[channel], 0.0, 1.0) * 255.0).astype(np.uint8)
        out[~covered] = 0
        return out
    out = np.argmax(values, axis=0).astype(np.uint8)
    out[~covered] = fill_class
    return out


class SlideMapSink:
    """Receives a slide map from :class:`~mixsup_monai.inferers.StreamingSlideInferer`, band by band.

    ``start`` is called once with the map's geometry, ``write`` for each band of rows top to bottom, then
    ``finish`` (whose return value the inferer returns) or, when the inference fails, ``abort``.
    """

    def start(self, size: tuple[int, int], channels: int, mpp: float | None) -> None:
        """Before the first band: the map's ``(width, height)``, its number of channels ``L`` and its um/px."""

    def write(self, y0: int, values: np.ndarray, covered: np.ndarray) -> None:
        """Rows ``y0 .. y0 + h`` of the map: ``values`` ``(L, h, width)`` float32, ``covered`` ``(h, width)`` bool."""
        raise NotImplementedError

    def finish(self) -> Any:
        """After the last band; returns the sink's result."""
        return None

    def abort(self) -> None:
        """The inference failed: release what was started, write nothing."""


class ArraySink(SlideMapSink):
    """Collects the whole map in memory (small slides, evaluation against masks): ``values`` ``(L, H, W)`` float32
    and ``covered`` ``(H, W)`` bool; ``finish`` returns ``values``."""

    def __init__(self) -> None:
        self.values: np.ndarray | None = None
        self.covered: np.ndarray | None = None

    def start(self, size: tuple[int, int], channels: int, mpp: float | None) -> None:
        width, height = size
        self.values = np.zeros((channels, height, width), np.float32)
        self.covered = np.zeros((height, width), bool)

    def write(self, y0: int, values: np.ndarray, covered: np.ndarray) -> None:
        self.values[:, y0 : y0 + values.shape[1]] = values
        self.covered[y0 : y0 + values.shape[1]] = covered

    def finish(self) -> np.ndarray:
        return self.values


class PyramidalTiffSink(SlideMapSink):
    """Writes the map as a one-channel pyramidal TIFF (:class:`~mixsup_monai.wsi.pyramid.PyramidalTiffWriter`).

    Probability maps are reduced with the box filter, class maps with nearest (class indices are not averaged).

    Args:
        path: output ``.tif``.
        encoding: ``"probability"`` or ``"class"`` (see :func:`map_to_uint8`).
        channel: probability channel.
        fill_class: class of uncovered pixels.
        mpp: microns per map pixel (default: the slide's level-0 MPP times the map's downsample).
        kwargs: other :class:`~mixsup_monai.wsi.pyramid.PyramidalTiffWriter` arguments (``tile_size``,
            ``compression`` -- lossless ``"lzw"`` by default --, ...).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        encoding: str = MapEncoding.PROBABILITY,
        channel: int = 1,
        fill_class: int = 0,
        mpp: float | None = None,
        **kwargs: Any,
    ):
        self.path = Path(path)
        self.encoding = look_up_option(encoding, MapEncoding)
        self.channel, self.fill_class, self.mpp = int(channel), int(fill_class), mpp
        self.kwargs = kwargs
        self._writer: PyramidalTiffWriter | None = None

    def start(self, size: tuple[int, int], channels: int, mpp: float | None) -> None:
        mpp = self.mpp if self.mpp is not None else mpp
        if mpp is None:
            raise ValueError(
                f"PyramidalTiffSink({str(self.path)!r}): the slide's MPP is unknown; pass mpp= (microns per map pixel)"
            )
        resample = PyramidResample.NEAREST if self.encoding == MapEncoding.CLASS else PyramidResample.AREA
        self._writer = PyramidalTiffWriter(self.path, size, mpp, channels=1, resample=resample, **self.kwargs)

    def write(self, y0: int, values: np.ndarray, covered: np.ndarray) -> None:
        self._writer.write_rows(map_to_uint8(values, covered, self.encoding, self.channel, self.fill_class))

    def finish(self) -> Path:
        self._writer.close()
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()


class ThumbnailSink(SlideMapSink):
    """A small PNG of the map: probabilities as grey levels (box mean), classes in colours (nearest).

    Memory: the thumbnail's sums (``max_size`` squared floats at most), whatever the map's size.

    Args:
        path: output ``.png``.
        max_size: long side of the thumbnail (the map is reduced by an integer factor to fit).
        encoding: ``"probability"`` or ``"class"``.
        channel: probability channel.
        fill_class: class of uncovered pixels.
        colours: RGB of each class index (``"class"``).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        max_size: int = 1024,
        encoding: str = MapEncoding.PROBABILITY,
        channel: int = 1,
        fill_class: int = 0,
        colours: Sequence[Sequence[int]] = DEFAULT_CLASS_COLOURS,
    ):
        if max_size < 1:
            raise ValueError(f"ThumbnailSink: max_size must be >= 1, got {max_size!r}")
        self.path = Path(path)
        self.max_size = int(max_size)
        self.encoding = look_up_option(encoding, MapEncoding)
        self.channel, self.fill_class = int(channel), int(fill_class)
        self.colours = np.asarray(colours, np.uint8)
        self.factor = 1
        self._sums: np.ndarray | None = None
        self._rows: np.ndarray | None = None
        self.picture: np.ndarray | None = None

    def start(self, size: tuple[int, int], channels: int, mpp: float | None) -> None:
        width, height = size
        self.factor = max(1, math.ceil(max(width, height) / self.max_size))
        shape = (-(-height // self.factor), -(-width // self.factor))
        self._sums = np.zeros(shape, np.float64)
        self._rows = np.zeros(shape[0], np.int64)
        self._columns = np.bincount(np.arange(width) // self.factor).astype(np.float64)

    def write(self, y0: int, values: np.ndarray, covered: np.ndarray) -> None:
        band = map_to_uint8(values, covered, self.encoding, self.channel, self.fill_class)
        f = self.factor
        if self.encoding == MapEncoding.CLASS:  # nearest: the rows and columns at multiples of the factor
            rows = np.arange(y0, y0 + len(band))
            keep = rows % f == 0
            self._sums[rows[keep] // f] = band[keep, ::f]
            self._rows[rows[keep] // f] = 1
            return
        starts = np.arange(0, band.shape[1], f)
        for thumb_row in range(y0 // f, (y0 + len(band) - 1) // f + 1):
            a, b = max(thumb_row * f, y0) - y0, min((thumb_row + 1) * f, y0 + len(band)) - y0
            self._sums[thumb_row] += np.add.reduceat(band[a:b].sum(axis=0, dtype=np.int64), starts)
            self._rows[thumb_row] += b - a

    def finish(self) -> Path:
        if self.encoding == MapEncoding.CLASS:
            picture = self.colours[self._sums.astype(np.int64) % len(self.colours)]
        else:
            mean = self._sums / np.maximum(self._rows[:, None] * self._columns[None, :], 1)
            picture = np.rint(mean).astype(np.uint8)
        self.picture = picture  # what was written, for pictures made from it (an overlay)
        return save_png(picture, self.path)


class GeoJSONSink(SlideMapSink):
    """The map's class regions as a QuPath GeoJSON file, from a class map reduced to at most ``max_size`` pixels.

    Every ``f``-th row and column of the argmax class map (``f`` the smallest integer with the long side at most
    ``max_size``) is kept, so memory is ``max_size`` squared bytes whatever the slide's size; polygons are in
    level-0 pixels (``downsample`` level-0 pixels per map pixel, times ``f``). Class 0 and uncovered pixels
    are background (no polygons).

    Args:
        path: output ``.geojson``.
        classes: class names by class index.
        downsample: level-0 pixels per map pixel (the inferer's ``downsample``).
        max_size: long side of the reduced class map.
        min_area: regions of fewer reduced-map pixels are left out.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        classes: Sequence[str],
        downsample: float = 1.0,
        max_size: int = 4096,
        min_area: float = 4,
    ):
        if max_size < 1:
            raise ValueError(f"GeoJSONSink: max_size must be >= 1, got {max_size!r}")
        self.path, self.classes = Path(path), [str(c) for c in classes]
        self.downsample, self.max_size, self.min_area = float(downsample), int(max_size), float(min_area)
        self.factor = 1
        self._labels: np.ndarray | None = None

    def start(self, size: tuple[int, int], channels: int, mpp: float | None) -> None:
        width, height = size
        if channels > 1 and channels != len(self.classes):
            raise ValueError(f"GeoJSONSink: a {channels}-channel map needs {channels} class names, got {self.classes}")
        self.factor = max(1, math.ceil(max(width, height) / self.max_size))
        self._labels = np.zeros((-(-height // self.factor), -(-width // self.factor)), np.uint8)

    def write(self, y0: int, values: np.ndarray, covered: np.ndarray) -> None:
        f = self.factor
        rows = np.arange(y0, y0 + values.shape[1])
        keep = rows % f == 0
        if not keep.any():
            return
        band = values[:, keep, ::f]
        labels = band.argmax(0) if band.shape[0] > 1 else (band[0] > 0.5)
        labels = labels.astype(np.uint8)
        labels[~covered[keep, ::f]] = 0
        self._labels[rows[keep] // f] = labels

    def finish(self) -> Path:
        from mixsup_monai.visualize.geojson import label_map_to_geojson, write_geojson

        collection = label_map_to_geojson(
            self._labels, self.classes, downsample=self.downsample * self.factor, min_area=self.min_area
        )
        return write_geojson(self.path, collection)
