"""Reading one image region for tile inference: a PNG / JPEG / TIFF tile, a box of a slide, or an array.

This is the input side of every bundle's ``inference.json`` -- what MONAI Label (``/infer`` hands a file,
``/infer/wsi`` a slide path with ``location`` / ``size`` / ``level``, DSA an array) and the Model Zoo call.
The region is brought to the network's resolution (``mpp``); the label made from the prediction is brought
back to the region's own pixels by :class:`~mixsup_monai.transforms.TileLabeld`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from mixsup_monai.utils.errors import InputError
from mixsup_monai.wsi.cache import get_slide

__all__ = ["LoadTiled", "LoadTileD", "LoadTileDict", "TILE_META_KEYS"]

#: what :class:`LoadTiled` records in the image's meta data, for the label and its contours.
TILE_META_KEYS = ("spatial_shape", "location", "level_downsample", "network_downsample", "filename_or_obj")


def _as_pair(value: object, name: str, source: str) -> tuple[int, int]:
    array = np.asarray(value).reshape(-1)
    if array.size != 2 or not np.all(np.isfinite(array.astype(float))):
        raise InputError(f"{name} must be two numbers (x, y) / (width, height)", source, f"got {value!r}")
    return int(round(float(array[0]))), int(round(float(array[1])))


def _hwc_uint8(array: np.ndarray, source: str) -> np.ndarray:
    """An RGB(A) region as ``(H, W, 3)`` uint8; ``(3, H, W)`` and [0, 1] floats are accepted."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise InputError("expected an RGB region (H, W, 3)", source, f"got shape {array.shape}")
    array = array[..., :3]
    if array.dtype != np.uint8:
        scale = 255.0 if float(np.nanmax(array, initial=0)) <= 1.0 else 1.0
        array = np.clip(np.nan_to_num(array.astype(np.float32)) * scale + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


class LoadTiled(MapTransform):
    """Load ``data[key]`` as a ``(3, h, w)`` float MetaTensor in [0, 1] at the network's resolution.

    ``data[key]`` is one of:

    * a path to a plain image (PNG / JPEG / ...) or a slide, read whole;
    * a path to a slide with ``location`` (level-0 ``(x, y)``) and ``size`` (``(width, height)`` at ``level``,
      default 0) in the item -- MONAI Label's ``/infer/wsi`` tiles;
    * an ``(H, W, 3)`` / ``(3, H, W)`` array (uint8, or floats in [0, 1]).

    The region is resized to ``mpp`` microns per pixel: the input's resolution is the slide's MPP (times the
    level's downsample) when the file states it, else ``input_mpp``. The meta data keep what the label needs to
    return to the region's pixels (:data:`TILE_META_KEYS`): ``spatial_shape`` ``(H, W)`` of the region,
    ``location``, ``level_downsample`` (level-0 pixels per region pixel) and ``network_downsample`` (region
    pixels per network pixel).

    Args:
        keys: image keys.
        mpp: microns per pixel the network was trained at.
        input_mpp: microns per pixel of inputs that do not state it (plain images, arrays, slides without MPP).
        max_pixels: refuse regions with more pixels than this at the network's resolution (a whole slide is
            for ``slide_inference.json``, which streams it).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        mpp: float = 1.0,
        input_mpp: float = 1.0,
        max_pixels: int = 8192 * 8192,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        for name, value in (("mpp", mpp), ("input_mpp", input_mpp)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"LoadTiled: {name} must be a positive number of microns per pixel, got {value!r}")
        self.mpp, self.input_mpp, self.max_pixels = float(mpp), float(input_mpp), int(max_pixels)

    def _out_size(self, size: tuple[int, int], region_mpp: float, source: str) -> tuple[tuple[int, int], float]:
        factor = self.mpp / region_mpp
        out = (max(1, round(size[0] / factor)), max(1, round(size[1] / factor)))
        if out[0] * out[1] > self.max_pixels:
            raise InputError(
                f"a {size[0]} x {size[1]} px region is {out[0]} x {out[1]} px at the network's "
                f"{self.mpp:g} um/px, above max_pixels={self.max_pixels}",
                source,
                "ask for a smaller region, or run configs/slide_inference.json on the whole slide",
            )
        return out, factor

    def _read_path(self, d: Mapping, key: Hashable) -> tuple[np.ndarray, dict]:
        path = os.fspath(d[key])
        slide = get_slide(path)
        level = int(d.get("level") or 0)
        if not 0 <= level < slide.info.level_count:
            raise InputError(f"no level {level}", path, f"the slide has levels 0..{slide.info.level_count - 1}")
        level_ds = float(slide.info.level_downsamples[level])
        if d.get("location") is None and d.get("size") is None:
            location, size = (0, 0), slide.info.level_dimensions[level]
        else:
            location = _as_pair(d.get("location", (0, 0)), "location", path)
            size = _as_pair(d.get("size"), "size", path)
        if min(size) < 1:
            raise InputError("empty region", path, f"size {size}: width and height must be >= 1")
        region_mpp = slide.info.mpp * level_ds if slide.info.mpp else self.input_mpp
        out, factor = self._out_size(size, region_mpp, path)
        box0 = (max(1, round(size[0] * level_ds)), max(1, round(size[1] * level_ds)))
        rgb = slide.read_scaled(location=location, size=box0, out_size=out)
        meta = {"spatial_shape": (size[1], size[0]), "location": location, "level_downsample": level_ds}
        return rgb, {**meta, "network_downsample": factor, "filename_or_obj": path}

    def _read_array(self, d: Mapping, key: Hashable) -> tuple[np.ndarray, dict]:
        from PIL import Image

        source = f"item key {key!r}"
        rgb = _hwc_uint8(d[key].numpy() if torch.is_tensor(d[key]) else d[key], source)
        height, width = rgb.shape[:2]
        out, factor = self._out_size((width, height), self.input_mpp, source)
        if out != (width, height):
            resample = Image.Resampling.BOX if factor > 1 else Image.Resampling.BILINEAR
            rgb = np.asarray(Image.fromarray(rgb).resize(out, resample))
        location = _as_pair(d.get("location", (0, 0)), "location", source)
        meta = {"spatial_shape": (height, width), "location": location, "level_downsample": 1.0}
        return rgb, {**meta, "network_downsample": factor, "filename_or_obj": str(d.get("name", "array"))}

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            rgb, meta = self._read_path(d, key) if isinstance(value, (str, os.PathLike)) else self._read_array(d, key)
            tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255.0)
            d[key] = MetaTensor(tensor, meta=meta)
        return d


LoadTileD = LoadTileDict = LoadTiled


def region_of(meta: Mapping, fallback_shape: Sequence[int]) -> dict:
    """The :data:`TILE_META_KEYS` of a (possibly collated then decollated) meta dict, as plain Python values."""

    def plain(value, default):
        if value is None:
            return default
        array = np.asarray(value.cpu() if torch.is_tensor(value) else value).reshape(-1)
        return array.tolist()

    shape = plain(meta.get("spatial_shape"), list(fallback_shape))
    location = plain(meta.get("location"), [0, 0])
    name = meta.get("filename_or_obj", "tile")
    return {
        "spatial_shape": (int(shape[-2]), int(shape[-1])),
        "location": (float(location[0]), float(location[1])),
        "level_downsample": float(plain(meta.get("level_downsample"), [1.0])[0]),
        "network_downsample": float(plain(meta.get("network_downsample"), [1.0])[0]),
        "filename_or_obj": str(name[0] if isinstance(name, (list, tuple)) else name),
    }
