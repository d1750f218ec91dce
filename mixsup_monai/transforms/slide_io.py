"""Reading a slide region (and the matching part of its label map) as MONAI dictionary transforms."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from mixsup_monai.wsi.cache import get_slide
from mixsup_monai.wsi.labels import crop_label_map, read_label_map

__all__ = [
    "LoadSlideRegion",
    "LoadSlideRegiond",
    "LoadSlideRegionD",
    "LoadSlideRegionDict",
    "LoadSlided",
    "LoadSlideD",
    "LoadSlideDict",
]


class LoadSlideRegion(Transform):
    """Read a level-0 box of a slide, resampled to ``out_size``, as a ``(3, H, W)`` float tensor in [0, 1].

    The box is read at the coarsest pyramid level that still has at least the output resolution, then
    resized (area), so a 4000 px block shown to the network as 240 px costs a low-level read.

    Args:
        out_size: ``(W, H)`` of the output in pixels.
    """

    def __init__(self, out_size: Sequence[int]):
        if len(out_size) != 2 or min(out_size) <= 0:
            raise ValueError(f"LoadSlideRegion: out_size must be (width, height) > 0, got {out_size!r}")
        self.out_size = (int(out_size[0]), int(out_size[1]))

    def __call__(
        self, path: str, location: Sequence[int], size: Sequence[int], mpp: float | None = None
    ) -> torch.Tensor:
        slide = get_slide(path, mpp)
        rgb = slide.read_scaled(location=tuple(location), size=tuple(size), out_size=self.out_size)
        return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255.0)


class LoadSlideRegiond(MapTransform):
    """Dictionary version of :class:`LoadSlideRegion`, optionally with the matching label-map crop.

    Reads ``data[key]`` (slide path) at ``data[location_key]`` / ``data[size_key]`` (level 0) and replaces
    it with the ``(3, H, W)`` image tensor. When ``mask_key`` is set and the item has a path there
    (label map at ``mask_level``), also writes ``mask_output_key``: a ``(1, H, W)`` long tensor of class
    indices (255 = ignore) aligned with the image -- with the box only, not its ``context``. Items without
    one get an all-``missing_mask_value`` map when that is set (so that a batch mixing both collates).

    ``context`` adds that many output pixels of surrounding slide on every side (the output is then
    ``out_size + 2 * context``; pixels beyond the slide are black): a network whose loss only sees the
    centre (:class:`~mixsup_monai.inferers.CenterCropInferer`) cannot tell the block's border from the
    zero padding of its convolutions, so it cannot place a block's required class fraction there.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        out_size: Sequence[int] = (64, 64),
        location_key: str = "location",
        size_key: str = "size",
        mask_key: str | None = None,
        mask_output_key: str = "label_map",
        context: int = 0,
        missing_mask_value: int | None = None,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.missing_mask_value = missing_mask_value
        if context < 0:
            raise ValueError(f"LoadSlideRegiond: context must be >= 0 output pixels, got {context}")
        self.context = int(context)
        self.loader = LoadSlideRegion((int(out_size[0]) + 2 * self.context, int(out_size[1]) + 2 * self.context))
        self.out_size = (int(out_size[0]), int(out_size[1]))
        self.location_key = location_key
        self.size_key = size_key
        self.mask_key = mask_key
        self.mask_output_key = mask_output_key
        self._label_maps: dict[str, np.ndarray] = {}

    def _label_map(self, path: str) -> np.ndarray:
        if path not in self._label_maps:
            self._label_maps[path] = read_label_map(path)
        return self._label_maps[path]

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            (x, y), (w, h) = d[self.location_key], d[self.size_key]
            margin_x = round(self.context * w / self.out_size[0])
            margin_y = round(self.context * h / self.out_size[1])
            location, size = (x - margin_x, y - margin_y), (w + 2 * margin_x, h + 2 * margin_y)
            d[key] = self.loader(path, location, size, d.get("mpp"))
            if self.mask_key is None:
                continue
            if d.get(self.mask_key):
                slide = get_slide(path, d.get("mpp"))
                level = int(d["mask_level"])
                crop = crop_label_map(
                    self._label_map(str(d[self.mask_key])),
                    slide.info.level_downsamples[level],
                    (x, y),
                    (w, h),
                    self.out_size,
                )
                d[self.mask_output_key] = torch.from_numpy(crop.astype(np.int64))[None]
            elif self.missing_mask_value is not None:
                shape = (1, self.out_size[1], self.out_size[0])
                d[self.mask_output_key] = torch.full(shape, int(self.missing_mask_value), dtype=torch.int64)
        return d


LoadSlideRegionD = LoadSlideRegionDict = LoadSlideRegiond


class LoadSlided(MapTransform):
    """Read a whole slide at a given down-sampling (for slide-level inference and evaluation).

    Replaces ``data[key]`` (slide path) by a ``(3, H, W)`` float tensor in [0, 1] of the slide at
    ``downsample`` level-0 pixels per output pixel. With ``mask_key`` and a ``mask`` in the item, also
    writes ``mask_output_key``: the label map resampled (nearest) onto the same ``(1, H, W)`` grid.
    Records ``downsample`` and the original ``slide_path`` in the item for savers downstream.

    Args:
        downsample: level-0 pixels per output pixel, e.g. ``block_size / network_input_size``; an item's own
            ``downsample`` (a labelled tile at another resolution than the slides) takes precedence.
        max_pixels: refuse outputs larger than this many pixels (a clear error instead of running out
            of memory on a gigapixel slide; raise ``downsample`` or the limit).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        downsample: float = 4.0,
        mask_key: str | None = None,
        mask_output_key: str = "label",
        max_pixels: int = 20_000 * 20_000,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        if downsample <= 0:
            raise ValueError(f"LoadSlided: downsample must be > 0, got {downsample}")
        self.downsample = float(downsample)
        self.mask_key = mask_key
        self.mask_output_key = mask_output_key
        self.max_pixels = max_pixels

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            slide = get_slide(path, d.get("mpp"))
            width, height = slide.info.level_dimensions[0]
            downsample = float(d.get("downsample", self.downsample))
            out_size = (max(1, round(width / downsample)), max(1, round(height / downsample)))
            if out_size[0] * out_size[1] > self.max_pixels:
                raise ValueError(
                    f"slide {path!r}: {width} x {height} px at downsample {downsample} gives "
                    f"{out_size[0]} x {out_size[1]} px, above max_pixels={self.max_pixels}; "
                    "raise downsample or max_pixels"
                )
            rgb = slide.read_scaled(location=(0, 0), size=(width, height), out_size=out_size)
            d[key] = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255.0)
            d["slide_path"] = path
            d["downsample"] = downsample
            if self.mask_key is not None and d.get(self.mask_key):
                level = int(d["mask_level"])
                crop = crop_label_map(
                    read_label_map(str(d[self.mask_key])),
                    slide.info.level_downsamples[level],
                    (0, 0),
                    (out_size[0] * downsample, out_size[1] * downsample),
                    out_size,
                )
                d[self.mask_output_key] = torch.from_numpy(crop.astype(np.int64))[None]
        return d


LoadSlideD = LoadSlideDict = LoadSlided
