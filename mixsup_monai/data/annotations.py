"""Labelled tiles drawn by people (MONAI Label's datastore) as the bundles' pixel-level training data.

MONAI Label's ``BundleTrainTask`` sets ``train#dataset#data`` (and ``validate#dataset#data``) to records
``{"image": tile, "label": label map}`` of its datastore: a tile (PNG / JPEG / TIFF, or a slide) and a
single-channel uint8 label image of the same size whose values are the ``channel_def`` indices of the bundle's
``metadata.json`` (what its ``inference.json`` writes back), 255 for pixels nobody labelled. This module checks
such records at the boundary and cuts them into the items each bundle trains on:

* :func:`annotated_tiles` -- the records, checked, as one-level "slides" with their label map
  (``mask`` at ``mask_level`` 0) and the tile's resolution;
* :func:`annotation_patch_items` -- patches of ``patch_size`` network pixels covering each tile, at the
  network's resolution (``mpp``), each with its label-map crop (MixSup's pixel pool, NPL's supervised patches);
* :func:`annotation_slide_items` -- the tiles as whole-slide items at the network's resolution (evaluation);
* :class:`AnnotatedDataset` -- a dataset holding the bundle's own items plus the items of ``data`` records, so
  that setting ``data`` (MONAI Label does) adds the labelled tiles to the datalist's.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from monai.data import CacheDataset

from mixsup_monai.utils.errors import InputError, InputNotFoundError
from mixsup_monai.wsi.cache import get_slide
from mixsup_monai.wsi.labels import IGNORE_INDEX, read_label_map

__all__ = [
    "AnnotatedDataset",
    "annotated_tiles",
    "annotation_patch_items",
    "annotation_slide_items",
    "labelled_patches",
    "tile_positions",
]

logger = logging.getLogger(__name__)

#: where errors about records say they come from.
DATASTORE = "MONAI Label datastore record"


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of microns per pixel, got {value!r}")
    return float(value)


def _record_paths(record: object, index: int) -> tuple[str, str]:
    if not isinstance(record, Mapping) or not {"image", "label"} <= set(record):
        raise InputError(
            f"{DATASTORE} {index} is not {{'image': tile, 'label': label map}}", "train#dataset#data", f"got {record!r}"
        )
    paths = []
    for key in ("image", "label"):
        path = os.fspath(record[key])
        if not os.path.isfile(path):
            raise InputNotFoundError(f"{DATASTORE} {index}: {key} file not found", path, "the datastore lists it")
        paths.append(path)
    return paths[0], paths[1]


def annotated_tiles(records: Sequence[Mapping], num_classes: int, input_mpp: float = 1.0) -> list[dict]:
    """Check MONAI Label records and describe each labelled tile (see :func:`_checked_tiles`)."""
    return [tile for tile, _ in _checked_tiles(records, num_classes, input_mpp)]


def _checked_tiles(
    records: Sequence[Mapping], num_classes: int, input_mpp: float = 1.0
) -> list[tuple[dict, np.ndarray]]:
    """Check MONAI Label records; ``(description, label map)`` of each labelled tile (each label read once).

    Args:
        records: ``[{"image": tile path, "label": label-map path}, ...]`` (other keys are ignored).
        num_classes: C: label values must be ``< C`` (the ``channel_def`` indices) or 255 (unlabelled).
        input_mpp: microns per pixel of tiles whose file does not state it (PNG / JPEG exports).

    Returns:
        Per record, a dict -- ``image``, ``mask`` (the label path), ``mask_level`` 0, ``mpp`` (the tile's level-0
        microns per pixel), ``width``, ``height``, ``labelled`` (pixels with a class) -- and the ``(H, W)`` label map.

    Raises:
        InputError: a record without ``image`` / ``label``, a missing file, a label that is not one channel,
            not the tile's size, holds values other than ``0..C-1`` and 255, or labels no pixel.
    """
    input_mpp = _positive(input_mpp, "input_mpp")
    tiles = []
    for index, record in enumerate(records):
        image, label = _record_paths(record, index)
        slide = get_slide(image)
        width, height = slide.info.level_dimensions[0]
        try:
            label_map = read_label_map(label)
        except ValueError as error:
            raise InputError("label is not a single-channel uint8 image", label, str(error)) from None
        if label_map.shape != (height, width):
            raise InputError(
                f"label is {label_map.shape[1]} x {label_map.shape[0]} px, its tile {width} x {height} px",
                label,
                f"the label map must cover the tile {image!r} pixel for pixel",
            )
        values = np.unique(label_map)
        bad = [int(v) for v in values if v >= num_classes and v != IGNORE_INDEX]
        if bad:
            raise InputError(
                f"label values {bad[:8]} are not classes",
                label,
                f"expected the channel_def indices 0..{num_classes - 1} of metadata.json, 255 for unlabelled",
            )
        labelled = int(np.count_nonzero(label_map != IGNORE_INDEX))
        if labelled == 0:
            raise InputError("label marks no pixel", label, f"every pixel is 255 (unlabelled); tile {image!r}")
        mpp = slide.info.mpp if slide.info.mpp else input_mpp
        tile = {"image": image, "mask": label, "mask_level": 0, "mpp": float(mpp), "width": int(width)}
        tiles.append((tile | {"height": int(height), "labelled": labelled}, label_map))
    return tiles


def tile_positions(length: int, patch: int, stride: int) -> list[int]:
    """Starts of patches of ``patch`` px every ``stride`` px covering ``[0, length)``, the last one flush with the
    end; one patch centred on the extent when it is shorter than a patch (its outside is padding)."""
    if length <= patch:
        return [(length - patch) // 2]
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def annotation_patch_items(
    records: Sequence[Mapping],
    patch_size: int,
    mpp: float,
    num_classes: int,
    input_mpp: float = 1.0,
    stride: int | None = None,
    min_labelled: float = 0.05,
) -> list[dict]:
    """Patches covering labelled tiles at the network's resolution, as items for ``LoadSlideRegiond``.

    A tile at ``t`` microns per pixel gives patches of ``patch_size * mpp / t`` tile pixels (read and resized to
    ``patch_size``), every ``stride`` network pixels (default: ``patch_size``, no overlap), the last row and column
    flush with the tile's edge. Patches with less than ``min_labelled`` of their pixels labelled are dropped.

    Args:
        records: MONAI Label records ``{"image", "label"}`` (see :func:`annotated_tiles`).
        patch_size: patch edge in network pixels.
        mpp: microns per pixel the network trains at.
        num_classes: C, the classes of the label values.
        input_mpp: microns per pixel of tiles whose file does not state it.
        stride: step between patches in network pixels.
        min_labelled: minimum labelled share of a patch.

    Returns:
        Items ``{"image", "location", "size" (tile pixels), "level": 0, "mask", "mask_level": 0, "mpp",
        "region": [0, 0, width, height]}``: the label-map crop of ``mask`` is the patch's pixel target.
    """
    return [
        item for item, _ in labelled_patches(records, patch_size, mpp, num_classes, input_mpp, stride, min_labelled)
    ]


def labelled_patches(
    records: Sequence[Mapping],
    patch_size: int,
    mpp: float,
    num_classes: int,
    input_mpp: float = 1.0,
    stride: int | None = None,
    min_labelled: float = 0.05,
) -> list[tuple[dict, np.ndarray]]:
    """:func:`annotation_patch_items` with each patch's labelled pixels per class: ``[(item, (C,) counts), ...]``.

    The counts give patch- and block-level labels (NPL's majority class, LSR's most likely z) without reading the
    label maps again.
    """
    if patch_size <= 0 or (stride is not None and stride <= 0):
        raise ValueError(f"patch_size and stride must be > 0, got {patch_size} and {stride}")
    mpp = _positive(mpp, "mpp")
    items = []
    for tile, label_map in _checked_tiles(records, num_classes, input_mpp):
        scale = mpp / tile["mpp"]  # tile pixels per network pixel
        patch0 = max(1, round(patch_size * scale))
        stride0 = max(1, round((stride or patch_size) * scale))
        for y in tile_positions(tile["height"], patch0, stride0):
            for x in tile_positions(tile["width"], patch0, stride0):
                crop = label_map[max(0, y) : y + patch0, max(0, x) : x + patch0]
                labelled = crop[crop != IGNORE_INDEX]
                if labelled.size < min_labelled * patch0 * patch0:
                    continue
                items.append(
                    (
                        {"image": tile["image"], "location": [x, y], "size": [patch0, patch0], "level": 0}
                        | {"mask": tile["mask"], "mask_level": 0, "mpp": tile["mpp"]}
                        | {"region": [0, 0, tile["width"], tile["height"]]},
                        np.bincount(labelled, minlength=num_classes),
                    )
                )
    return items


def annotation_slide_items(
    records: Sequence[Mapping], mpp: float, num_classes: int, input_mpp: float = 1.0
) -> list[dict]:
    """Labelled tiles as whole-"slide" items for :class:`~mixsup_monai.transforms.LoadSlided` (slide-level evaluation).

    Args:
        records: MONAI Label records ``{"image", "label"}`` (see :func:`annotated_tiles`).
        mpp: microns per pixel the network runs at.
        num_classes: C, the classes of the label values.
        input_mpp: microns per pixel of tiles whose file does not state it.

    Returns:
        Items ``{"image", "mask", "mask_level": 0, "mpp", "downsample"}``: ``downsample`` (tile pixels per network
        pixel) brings the tile to the network's resolution whatever the slides' own.
    """
    mpp = _positive(mpp, "mpp")
    keep = ("image", "mask", "mask_level", "mpp")
    return [
        {key: tile[key] for key in keep} | {"downsample": mpp / tile["mpp"]}
        for tile in annotated_tiles(records, num_classes, input_mpp)
    ]


class AnnotatedDataset(CacheDataset):
    """A bundle's items plus the items made from labelled-tile records (``data``), cached like ``CacheDataset``.

    ``data`` takes MONAI's ``Dataset(data=...)`` place, so that what MONAI Label's ``BundleTrainTask`` sets as
    ``train#dataset#data`` / ``validate#dataset#data`` -- its datastore's ``{"image", "label"}`` records -- joins
    the datalist's items (``items``) through ``data_items`` (e.g. a partial of :func:`annotation_patch_items`).

    Args:
        items: the bundle's own items (from its datalist).
        data: labelled-tile records; ``None`` or ``[]`` when there are none.
        data_items: turns ``data`` into items of the same kind as ``items``; required when ``data`` is not empty.
        transform: applied to each item.
        cache_rate: share of the items cached after the deterministic transforms (``CacheDataset``).
        num_workers: caching workers.
    """

    def __init__(
        self,
        items: Sequence[Mapping],
        data: Sequence[Mapping] | None = None,
        data_items: Callable[[Sequence[Mapping]], list[dict]] | None = None,
        transform: Callable | None = None,
        cache_rate: float = 0.0,
        num_workers: int | None = 1,
    ) -> None:
        annotated = list(data or [])
        if annotated and data_items is None:
            raise ValueError("AnnotatedDataset: data (labelled-tile records) given without data_items to read them")
        self.annotation_items = data_items(annotated) if annotated else []
        if annotated:
            logger.info(
                "%d items of %d labelled tile(s) join the %d items",
                len(self.annotation_items),
                len(annotated),
                len(items),
            )
        super().__init__(
            data=[dict(i) for i in items] + self.annotation_items,
            transform=transform,
            cache_rate=cache_rate,
            num_workers=num_workers,
            progress=False,
        )
