"""MixSup training data: pixel-labelled patches cut from annotated regions, and one target format for all pools."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from mixsup_monai.wsi.cache import get_slide

__all__ = [
    "region_patch_items",
    "image_labelled_slides",
    "slide_label_of",
    "PatchTargetd",
    "PatchTargetD",
    "PatchTargetDict",
]

logger = logging.getLogger(__name__)


def image_labelled_slides(slides: Sequence[Mapping], label_key: str = "label") -> list[dict]:
    """The slides that carry an image-level label (the E-step predicts these)."""
    return [dict(s) for s in slides if label_key in s]


def _tiles(start: int, length: int, patch0: int, stride0: int, limit: int) -> list[int]:
    """Top-left corners of patches covering ``[start, start + length)`` (one centred patch if it is smaller)."""
    if length <= patch0:
        origin = start + (length - patch0) // 2
        return [int(min(max(origin, 0), max(limit - patch0, 0)))]
    out = list(range(start, start + length - patch0 + 1, stride0))
    if out[-1] + patch0 < start + length:  # cover the far edge too
        out.append(start + length - patch0)
    return out


def region_patch_items(
    slides: Sequence[Mapping],
    patch_size: int = 64,
    level: int = 0,
    stride: int | None = None,
    datalist_file: str = "<datalist>",
) -> list[dict]:
    """Patches of the pixel-labelled regions (MixSup's y_p pool), as items for the M-step.

    Every slide with ``mask`` (label map at ``mask_level``) and ``regions`` (``[x, y, w, h]`` level-0 boxes)
    contributes patches of ``patch_size`` pixels at ``level`` tiling each region with ``stride``
    (default: ``patch_size``, no overlap); a region smaller than a patch gets one patch centred on it.
    Pixels outside the region are ignored in the loss (:class:`PatchTargetd`).

    Args:
        slides: datalist entries (absolute paths, e.g. from :func:`~mixsup_monai.data.load_datalist`).
        patch_size: patch edge in pixels of ``level``.
        level: pyramid level the patches are read at (the E-step's level).
        stride: step between patches in pixels of ``level``.
        datalist_file: named in error messages.

    Returns:
        Items ``{"image", "location", "size" (level 0), "level", "mask", "mask_level", "region"}``.

    Raises:
        ValueError: no slide has regions, or a region lies outside its slide (file and key named).
    """
    stride = patch_size if stride is None else int(stride)
    if patch_size <= 0 or stride <= 0:
        raise ValueError(f"patch_size and stride must be > 0, got {patch_size} and {stride}")
    items: list[dict] = []
    for slide in slides:
        if "mask" not in slide or not slide.get("regions"):
            continue
        wsi = get_slide(slide["image"], slide.get("mpp"))
        if level >= wsi.info.level_count:
            raise ValueError(
                f"{datalist_file}: slide {slide['image']!r} has {wsi.info.level_count} levels, patch level {level} "
                "does not exist"
            )
        ds = float(wsi.info.level_downsamples[level])
        width, height = wsi.dimensions
        patch0, stride0 = int(round(patch_size * ds)), max(1, int(round(stride * ds)))
        for j, region in enumerate(slide["regions"]):
            x, y, w, h = (int(v) for v in region)
            if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
                raise ValueError(
                    f"{datalist_file}: slide {slide['image']!r} key 'regions[{j}]': box {list(region)} (x, y, w, h) "
                    f"lies outside the slide ({width} x {height} px at level 0)"
                )
            for ty in _tiles(y, h, patch0, stride0, height):
                for tx in _tiles(x, w, patch0, stride0, width):
                    item = {
                        "image": slide["image"],
                        "location": [tx, ty],
                        "size": [patch0, patch0],
                        "level": level,
                        "mask": slide["mask"],
                        "mask_level": int(slide["mask_level"]),
                        "region": [x, y, w, h],
                    }
                    if slide.get("mpp") is not None:
                        item["mpp"] = slide["mpp"]
                    items.append(item)
        logger.debug("slide %s: %d pixel-labelled patches", slide["image"], len(items))
    if not items:
        raise ValueError(
            f"{datalist_file}: no pixel-labelled regions: MixSup needs training slides with 'mask', 'mask_level' "
            "and 'regions'"
        )
    return items


class PatchTargetd(MapTransform):
    """The M-step target of a patch as a ``(1, H, W)`` float tensor, whatever pool the patch comes from.

    * a class-index label map (integer, from the pixel-labelled mask, e.g. ``LoadSlideRegiond(mask_key=
      "mask", mask_output_key="label")``): 1 where the class is in ``foreground``, 0 elsewhere, ``ignore_value``
      where the mask says 255;
    * a soft label (floating, e.g. MixSup's y_p+ from the pseudo-label store): kept as is;
    * no label but ``fill_key`` (hard negatives, top-k MIL): a constant map of that value.

    When the item has ``region_key`` (``[x, y, w, h]`` level-0), pixels whose centre lies outside the region
    become ``ignore_value``: only the annotated region supervises.

    Args:
        keys: key of the label (default ``"label"``).
        image_key: the ``(C, H, W)`` image the label must match.
        fill_key: key of the constant label value.
        region_key: key of the annotated region box.
        foreground: mask class indices that count as positive (MixSup binary: ``(1,)`` = tumour).
        ignore_value: value of ignored pixels (the loss's ``ignore_value``).
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        image_key: str = "image",
        fill_key: str = "label_fill",
        region_key: str = "region",
        foreground: Sequence[int] = (1,),
        ignore_value: float = 255.0,
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.fill_key = fill_key
        self.region_key = region_key
        self.foreground = tuple(int(v) for v in foreground)
        self.ignore_value = float(ignore_value)

    def _target(self, d: Mapping[Hashable, Any], key: Hashable, shape: tuple[int, int]) -> torch.Tensor:
        if key in d and d[key] is not None:
            lab = torch.as_tensor(np.asarray(d[key]) if not torch.is_tensor(d[key]) else d[key])
            lab = lab.reshape((1, *lab.shape[-2:]))
            if not lab.is_floating_point():
                ignore = lab == 255
                fg = torch.isin(lab, torch.tensor(self.foreground, dtype=lab.dtype))
                lab = torch.where(ignore, torch.tensor(self.ignore_value), fg.float())
            lab = lab.float()
        elif self.fill_key in d:
            lab = torch.full((1, *shape), float(d[self.fill_key]))
        else:
            raise ValueError(
                f"patch at {d.get('location')!r}: no {key!r} and no {self.fill_key!r}; expected a label map, a soft "
                "label or a constant fill value"
            )
        if tuple(lab.shape[-2:]) != tuple(shape):
            raise ValueError(f"label shape {tuple(lab.shape)} does not match the image {tuple(shape)}")
        return lab

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        shape = tuple(d[self.image_key].shape[-2:])
        for key in self.keys:
            lab = self._target(d, key, shape)
            region = d.get(self.region_key)
            if region is not None:
                x, y, w, h = (float(v) for v in region)
                (lx, ly), (sw, sh) = d["location"], d["size"]
                xs = float(lx) + (np.arange(shape[1]) + 0.5) * float(sw) / shape[1]
                ys = float(ly) + (np.arange(shape[0]) + 0.5) * float(sh) / shape[0]
                inside = torch.from_numpy(((ys >= y) & (ys < y + h))[:, None] & ((xs >= x) & (xs < x + w))[None, :])
                lab = torch.where(inside[None], lab, torch.tensor(self.ignore_value))
            d[key] = lab
        return d


PatchTargetD = PatchTargetDict = PatchTargetd


def slide_label_of(slide: Mapping, label_key: str = "label", binary: bool = True) -> int:
    """The slide's label as an int, with an error naming the slide when it is missing or not 0/1."""
    value = slide.get(label_key)
    name = slide.get("image", "<slide>")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"slide {name!r}: key {label_key!r} must be an integer slide label, got {value!r}")
    if binary and value not in (0, 1):
        raise ValueError(
            f"slide {name!r}: key {label_key!r} is {value}, but MixSup binary pseudo labels need 0 (negative) "
            "or 1 (positive); for multi-class slide labels pass MixSupRule(positive_labels=[...]) and use the "
            "random-forest stage 2"
        )
    return int(value)
