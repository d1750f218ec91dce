"""Slide maps of any size: windows read from the slide in batches, blended band by band, streamed to sinks."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.utils import optional_import

from mixsup_monai.inferers.context_sliding_window import ContextSlidingWindowInferer
from mixsup_monai.inferers.slide_map_sinks import SlideMapSink
from mixsup_monai.wsi.cache import get_slide
from mixsup_monai.wsi.reader import Slide
from mixsup_monai.wsi.tissue import TissueMask

__all__ = ["SlideMapResult", "StreamingSlideInferer"]

tqdm, _has_tqdm = optional_import("tqdm", name="tqdm")

_ACTIVATIONS = ("softmax", "sigmoid", None)
#: map rows activated and passed to the sinks at a time
_EMIT_ROWS = 64


def _window_starts(size: int, roi: int, stride: int) -> list[int]:
    """Window starts along one axis, as MONAI's ``dense_patch_slices`` places them (the last one flush with the end)."""
    if roi >= size:
        return [0]
    count = next(d for d in range(math.ceil(size / stride)) if d * stride + roi >= size) + 1
    return [min(d * stride, size - roi) for d in range(count)]


@dataclass
class _Plan:
    """Where the windows of one slide go, in the padded map of ``ContextSlidingWindowInferer`` (``margin`` zeros
    around the map, then centred zeros up to ``roi`` when it is still smaller)."""

    map_size: tuple[int, int]  # (width, height) of the map
    offset: tuple[int, int]  # (x, y) of map pixel (0, 0) in the padded map
    padded_width: int
    y_starts: list[int]
    windows: list[list[int]]  # per window row, the x starts of the windows that are run
    skipped: int
    level: int
    read_size: int  # window edge read at ``level`` (``roi`` unless the level is resized to the map's scale)
    tissue: TissueMask | None = None  # restricts the map to tissue when set
    tissue_columns: np.ndarray | None = None  # the mask column of each map column (made at the first band)


@dataclass
class SlideMapResult:
    """What :meth:`StreamingSlideInferer.__call__` did.

    Attributes:
        map_size: ``(width, height)`` of the map.
        level: slide level the windows were read from.
        windows: windows run through the network.
        skipped: windows skipped as glass by the tissue mask.
        outputs: each sink's ``finish()`` result, in order (an :class:`ArraySink`'s array, a file's path).
    """

    map_size: tuple[int, int]
    level: int
    windows: int
    skipped: int
    outputs: list[Any] = field(default_factory=list, repr=False)


class StreamingSlideInferer:
    """Sliding-window slide maps without the slide or the map in memory.

    The same windows, weights and blending as :class:`ContextSlidingWindowInferer` on the whole slide read at
    ``downsample`` (as :class:`~mixsup_monai.transforms.LoadSlided` reads it), computed one row of windows at a
    time: windows are read from the slide in batches of ``sw_batch_size`` (the next batch is read in the
    background while the network runs), blended into an accumulator of ``roi_size`` rows by the map's width,
    and the rows no later window touches are passed to the sinks, after the activation. Memory: the accumulator,
    ``(L + 1) x roi_size x width`` float32 for an ``L``-channel network, two batches of windows, and what the
    sinks keep (an :class:`ArraySink` keeps the map; a :class:`PyramidalTiffSink` a row of tiles per level).

    With a tissue mask, windows without tissue (below ``min_tissue_fraction`` of their area) are not read nor
    run; pixels no window covers get ``covered=False`` (the sinks' fill value). With ``restrict_to_tissue`` too,
    so do the pixels outside the mask (glass and pen inside a window with tissue: a network trained on tissue
    says anything there).

    Args:
        roi_size: window edge in map pixels (``block_input_size + 2 * margin`` for a network trained with context).
        overlap: pixels shared by neighbouring windows (the window stride is ``roi_size - overlap``); at least
            ``2 * margin``.
        margin: unsupervised border of a window (``ContextSlidingWindowInferer``'s margin).
        downsample: level-0 pixels per map pixel; the network sees the slide at this scale.
        sw_batch_size: windows per network call.
        sigma_scale: Gaussian sigma of the window weights relative to the window centre.
        activation: ``"softmax"`` (over channels), ``"sigmoid"`` or ``None``, applied after blending.
        min_tissue_fraction: with a tissue mask, the tissue a window needs to be run (0: any tissue pixel).
        restrict_to_tissue: with a tissue mask, leave pixels outside it uncovered (nearest mask pixel).
        device: where the network runs (default: its parameters' device).
        progress: show a progress bar over the windows.
        num_workers: threads reading windows (default ``min(2, cpu count)``).
    """

    def __init__(
        self,
        roi_size: int = 512,
        overlap: int = 128,
        margin: int = 0,
        downsample: float = 1.0,
        sw_batch_size: int = 16,
        sigma_scale: float = 0.125,
        activation: str | None = "softmax",
        min_tissue_fraction: float = 0.0,
        restrict_to_tissue: bool = False,
        device: torch.device | str | None = None,
        progress: bool = False,
        num_workers: int | None = None,
    ):
        roi_size, overlap = int(roi_size), int(overlap)
        if not 0 <= overlap < roi_size:
            raise ValueError(f"StreamingSlideInferer: overlap must be in [0, roi_size), got {overlap} for {roi_size}")
        if not math.isfinite(downsample) or downsample <= 0:
            raise ValueError(f"StreamingSlideInferer: downsample must be > 0, got {downsample!r}")
        if sw_batch_size < 1:
            raise ValueError(f"StreamingSlideInferer: sw_batch_size must be >= 1, got {sw_batch_size!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"StreamingSlideInferer: activation must be one of {_ACTIVATIONS}, got {activation!r}")
        # the in-memory inferer checks margin against overlap and owns the window weights: one definition of both
        reference = ContextSlidingWindowInferer(roi_size, margin, overlap=overlap / roi_size, sigma_scale=sigma_scale)
        self.weights = reference.roi_weight_map.to(torch.float32)
        self.roi_size, self.overlap, self.margin = roi_size, overlap, int(margin)
        self.downsample = float(downsample)
        self.sw_batch_size = int(sw_batch_size)
        self.activation = activation
        self.min_tissue_fraction = float(min_tissue_fraction)
        self.restrict_to_tissue = bool(restrict_to_tissue)
        self.device = None if device is None else torch.device(device)
        self.progress = progress
        self.num_workers = num_workers

    # ---------------------------------------------------------------- planning
    def _plan(self, slide: Slide, tissue: TissueMask | None) -> _Plan:
        width, height = slide.dimensions
        ds, roi, m = self.downsample, self.roi_size, self.margin
        map_w, map_h = max(1, round(width / ds)), max(1, round(height / ds))
        pad_w, pad_h = map_w + 2 * m, map_h + 2 * m
        extra_x, extra_y = max(roi - pad_w, 0), max(roi - pad_h, 0)  # MONAI pads a too-small image, centred
        offset = (m + extra_x // 2, m + extra_y // 2)
        padded_w, padded_h = pad_w + extra_x, pad_h + extra_y
        stride = roi - self.overlap
        x_starts = _window_starts(padded_w, roi, stride)
        y_starts = _window_starts(padded_h, roi, stride)
        keep = _TissueWindows(tissue, ds, roi, offset, self.min_tissue_fraction)
        windows = [[x for x in x_starts if keep(x, y)] for y in y_starts]
        level = slide.level_for_downsample(ds)
        read_size = round(roi * ds / slide.info.level_downsamples[level])
        if abs(read_size - roi) <= roi * 1e-3:  # the level is the map's scale (odd level sizes: 1.9993 for 2)
            read_size = roi
        skipped = len(x_starts) * len(y_starts) - sum(len(row) for row in windows)
        restrict = tissue if self.restrict_to_tissue else None
        return _Plan((map_w, map_h), offset, padded_w, y_starts, windows, skipped, level, read_size, restrict)

    # ---------------------------------------------------------------- reading
    def _locations(self, plan: _Plan, y: int, xs: Sequence[int]) -> np.ndarray:
        """Level-0 ``(x, y)`` of windows at padded-map position ``(x, y)``."""
        ox, oy = plan.offset
        return np.array([(round((x - ox) * self.downsample), round((y - oy) * self.downsample)) for x in xs], np.int64)

    def _batches(self, slide: Slide, plan: _Plan) -> Iterator[tuple[int, int, list[int], np.ndarray]]:
        """``(row index, y, xs, (B, s, s, 3) uint8)`` batches row by row; the next batch is read while this one runs."""
        work = [
            (r, y, xs[i : i + self.sw_batch_size])
            for r, (y, xs) in enumerate(zip(plan.y_starts, plan.windows))
            for i in range(0, len(xs), self.sw_batch_size)
        ]
        size = (plan.read_size, plan.read_size)

        def submit(k: int):
            r, y, xs = work[k]
            locations = self._locations(plan, y, xs)
            return slide.read_regions(locations, size, plan.level, num_workers=self.num_workers, background=True)

        job = submit(0) if work else None
        for k, (r, y, xs) in enumerate(work):
            pixels = job.result()
            job = submit(k + 1) if k + 1 < len(work) else None
            yield r, y, xs, pixels

    def _window_tensor(self, plan: _Plan, y: int, xs: Sequence[int], pixels: np.ndarray) -> torch.Tensor:
        """``(B, 3, roi, roi)`` float in [0, 1]; zero outside the map, as the padded in-memory image is."""
        roi = self.roi_size
        if plan.read_size != roi:  # the level is finer than the map: area-resize each window (LoadSlided's BOX)
            from PIL import Image

            pixels = np.stack([np.asarray(Image.fromarray(p).resize((roi, roi), Image.Resampling.BOX)) for p in pixels])
        batch = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float().div_(255.0)
        (ox, oy), (map_w, map_h) = plan.offset, plan.map_size
        rows = torch.arange(y, y + roi) - oy
        batch[:, :, (rows < 0) | (rows >= map_h)] = 0.0
        for b, x in enumerate(xs):
            columns = torch.arange(x, x + roi) - ox
            batch[b, :, :, (columns < 0) | (columns >= map_w)] = 0.0
        return batch

    # ---------------------------------------------------------------- running
    def _tissue_rows(self, plan: _Plan, row0: int, rows: int) -> torch.Tensor:
        """``(rows, map width)`` bool: the tissue mask's nearest pixel of map rows ``row0 ..``."""
        mask = np.asarray(plan.tissue.mask, bool)
        scale = self.downsample / float(plan.tissue.downsample)  # mask pixels per map pixel
        ys = np.minimum(((np.arange(row0, row0 + rows) + 0.5) * scale).astype(np.int64), mask.shape[0] - 1)
        if plan.tissue_columns is None:  # the same for every band: once per slide
            xs = ((np.arange(plan.map_size[0]) + 0.5) * scale).astype(np.int64)
            plan.tissue_columns = np.minimum(xs, mask.shape[1] - 1)
        return torch.from_numpy(mask[np.ix_(ys, plan.tissue_columns)])

    def _device(self, network: Any) -> torch.device:
        if self.device is not None:
            return self.device
        parameter = next(iter(network.parameters()), None) if hasattr(network, "parameters") else None
        return torch.device("cpu") if parameter is None else parameter.device

    def _predict(self, network: Any, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``(B, L, roi, roi)`` float32 network outputs on the CPU, checked."""
        with torch.no_grad():
            out = network(batch.to(device))
        if not torch.is_tensor(out) or out.ndim != 4 or out.shape[0] != len(batch) or out.shape[2:] != batch.shape[2:]:
            shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(
                f"StreamingSlideInferer: the network must map (B, 3, {self.roi_size}, {self.roi_size}) windows to "
                f"(B, L, {self.roi_size}, {self.roi_size}) maps, got {shape}"
            )
        return out.float().cpu()

    def __call__(
        self,
        slide: Slide | str | os.PathLike,
        network: Any,
        sinks: SlideMapSink | Sequence[SlideMapSink] = (),
        tissue: TissueMask | None = None,
        mpp: float | None = None,
    ) -> SlideMapResult:
        """Compute the map of ``slide`` and stream it to ``sinks``.

        Args:
            slide: an open :class:`~mixsup_monai.wsi.reader.Slide` or a path (opened through the slide cache).
            network: ``(B, 3, roi, roi)`` float in [0, 1] -> ``(B, L, roi, roi)``; put it in eval mode first.
            sinks: where the bands go (:class:`ArraySink`, :class:`PyramidalTiffSink`, :class:`ThumbnailSink`).
            tissue: a tissue mask of the slide (:func:`~mixsup_monai.wsi.tissue.detect_tissue`): glass windows
                are skipped.
            mpp: the slide's level-0 microns per pixel when it is opened here and its tags lack it.

        Returns:
            :class:`SlideMapResult`, whose ``outputs`` are the sinks' results.
        """
        if not isinstance(slide, Slide):
            slide = get_slide(str(slide), mpp)
        sinks = [sinks] if isinstance(sinks, SlideMapSink) else list(sinks)
        plan = self._plan(slide, tissue)
        device = self._device(network)
        roi = self.roi_size
        channels = self._predict(network, torch.zeros(1, 3, roi, roi), device).shape[1]
        map_mpp = None if slide.info.mpp is None else slide.info.mpp * self.downsample
        started: list[SlideMapSink] = []
        try:
            for sink in sinks:
                sink.start(plan.map_size, channels, map_mpp)
                started.append(sink)
            self._run(slide, network, device, plan, channels, sinks)
            outputs = [sink.finish() for sink in sinks]
        except BaseException:
            for sink in started:
                sink.abort()
            raise
        windows = sum(len(xs) for xs in plan.windows)
        return SlideMapResult(plan.map_size, plan.level, windows, plan.skipped, outputs)

    def _run(
        self, slide: Slide, network: Any, device: torch.device, plan: _Plan, channels: int, sinks: list[SlideMapSink]
    ) -> None:
        """Every batch of windows into the accumulator; each finished band out to the sinks."""
        roi = self.roi_size
        band = _Band(torch.zeros(channels, roi, plan.padded_width), torch.zeros(roi, plan.padded_width))
        total = sum(len(xs) for xs in plan.windows)
        bar = tqdm(total=total, desc="slide map", unit="window") if self.progress and _has_tqdm else None
        row = 0
        try:
            for r, y, xs, pixels in self._batches(slide, plan):
                while row < r:  # rows of windows before this one are complete (or had no tissue)
                    self._emit(plan, row, band, sinks)
                    row += 1
                weighted = self._predict(network, self._window_tensor(plan, y, xs, pixels), device) * self.weights
                for b, x in enumerate(xs):
                    band.values[:, :, x : x + roi] += weighted[b]
                    band.weights[:, x : x + roi] += self.weights
                if bar is not None:
                    bar.update(len(xs))
            while row < len(plan.y_starts):
                self._emit(plan, row, band, sinks)
                row += 1
        finally:
            if bar is not None:
                bar.close()

    def _emit(self, plan: _Plan, row: int, band: _Band, sinks: list[SlideMapSink]) -> None:
        """Pass the map rows finished by window row ``row`` to the sinks, then slide the accumulator down."""
        y = plan.y_starts[row]
        last = row + 1 == len(plan.y_starts)
        n = self.roi_size if last else plan.y_starts[row + 1] - y
        (ox, oy), (map_w, map_h) = plan.offset, plan.map_size
        a, b = max(0, oy - y), min(n, oy + map_h - y)  # the padded rows y .. y + n that are map rows
        # in chunks of rows: the division and activation copies stay small next to the accumulator
        for start in range(a, b, _EMIT_ROWS):
            stop = min(b, start + _EMIT_ROWS)
            weights = band.weights[start:stop, ox : ox + map_w]
            covered = weights > 0
            if plan.tissue is not None:
                covered &= self._tissue_rows(plan, y - oy + start, stop - start)
            values = band.values[:, start:stop, ox : ox + map_w] / weights.clamp_min(torch.finfo(torch.float32).tiny)
            if self.activation == "softmax":
                values = torch.softmax(values, dim=0)
            elif self.activation == "sigmoid":
                values.sigmoid_()
            values[:, ~covered] = 0.0
            values_np, covered_np = values.numpy(), covered.numpy()
            for sink in sinks:
                sink.write(y - oy + start, values_np, covered_np)
        band.shift(n)


@dataclass
class _Band:
    """The accumulator: weighted sums ``(L, roi, padded width)`` and weights ``(roi, padded width)`` of the rows
    of the current window row."""

    values: torch.Tensor
    weights: torch.Tensor

    def shift(self, n: int) -> None:
        """Drop the first ``n`` rows (emitted), keep the rest at the top, zero the bottom."""
        rows = self.weights.shape[0]
        if n < rows:
            # the kept rows move up by n: a copy between overlapping rows needs a temporary, disjoint ones do not
            kept = rows - n
            self.values[:, :kept] = self.values[:, n:] if n >= kept else self.values[:, n:].clone()
            self.weights[:kept] = self.weights[n:] if n >= kept else self.weights[n:].clone()
        self.values[:, rows - n :] = 0.0
        self.weights[rows - n :] = 0.0


class _TissueWindows:
    """Whether a window (top-left corner in the padded map) has enough tissue, from the mask's integral image."""

    def __init__(
        self, tissue: TissueMask | None, downsample: float, roi: int, offset: tuple[int, int], min_fraction: float
    ):
        self.tissue = tissue
        self.roi, self.offset, self.min_fraction = roi, offset, min_fraction
        if tissue is not None:
            mask = np.asarray(tissue.mask, bool)
            self.integral = np.pad(mask.cumsum(0, dtype=np.int64).cumsum(1), ((1, 0), (1, 0)))
            self.scale = downsample / float(tissue.downsample)  # mask pixels per map pixel

    def __call__(self, x: int, y: int) -> bool:
        if self.tissue is None:
            return True
        height, width = self.tissue.mask.shape
        (ox, oy), s = self.offset, self.scale
        x0, y0 = max(0, math.floor((x - ox) * s)), max(0, math.floor((y - oy) * s))
        x1, y1 = min(width, math.ceil((x - ox + self.roi) * s)), min(height, math.ceil((y - oy + self.roi) * s))
        if x1 <= x0 or y1 <= y0:
            return False
        ii = self.integral
        count = int(ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0])
        return count > 0 and count >= self.min_fraction * (x1 - x0) * (y1 - y0)
