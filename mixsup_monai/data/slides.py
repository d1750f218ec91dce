"""Slide-level batches: one protocol for every evaluator and inferer whose items are whole slides.

A slide-level ``Dataset`` holds :func:`slide_items` (datalist entries reduced to :class:`SlideKeys`), its
``DataLoader`` collates them with :func:`collate_slides` (a list of dicts, nothing stacked) and the MONAI
evaluator's ``prepare_batch`` is :func:`prepare_slide_batch`, which hands the inferer that list and the
slide labels (when every slide has one)::

    "dataset": {"_target_": "Dataset", "data": "$mixsup_monai.data.slide_items(@loaded_datalist, 'test')"},
    "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "collate_fn": "$mixsup_monai.data.collate_slides"},
    "evaluator": {"_target_": "SupervisedEvaluator", "prepare_batch": "$mixsup_monai.data.prepare_slide_batch", ...}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.utils import StrEnum

from mixsup_monai.data.datalist import slides_of

__all__ = ["SlideKeys", "collate_slides", "prepare_slide_batch", "slide_items"]


class SlideKeys(StrEnum):
    """The datalist keys a slide-level item carries (the datalist contract names them all).

    Free-form extra keys of a datalist (``centre``, nested truth, ``None`` values) are dropped so that
    slide items of any cohort batch alike.
    """

    IMAGE = "image"
    LABEL = "label"
    MPP = "mpp"
    TISSUE_MASK = "tissue_mask"
    MASK = "mask"
    MASK_LEVEL = "mask_level"
    KNOWN_REGION = "known_region"
    PROPORTIONS = "proportions"


def slide_items(
    slides: Mapping | Sequence[Mapping],
    sections: str | Iterable[str] | None = None,
    require: str | None = None,
    keys: Iterable[str] = tuple(SlideKeys),
) -> list[dict]:
    """Dataset items of whole slides: each slide reduced to ``keys`` (``None`` values dropped).

    Args:
        slides: a loaded datalist (then ``sections`` is required) or a sequence of its slide entries.
        sections: ``"training"``, ``"validation"``, ``"test"`` or several, when ``slides`` is a datalist.
        require: keep only slides that have this key (e.g. ``"mask"`` for evaluation against masks).
        keys: the keys kept when present (default: every :class:`SlideKeys`).
    """
    if isinstance(slides, Mapping):
        if sections is None:
            raise ValueError("slide_items: pass the datalist sections to read (e.g. 'test') with a datalist")
        slides = slides_of(slides, sections)
    keys = tuple(str(k) for k in keys)
    out = []
    for slide in slides:
        if SlideKeys.IMAGE not in slide:
            raise ValueError(f"slide entry without {SlideKeys.IMAGE.value!r}: {dict(slide)!r}")
        if require is not None and require not in slide:
            continue
        out.append({k: slide[k] for k in keys if slide.get(k) is not None})
    return out


def collate_slides(batch: Sequence[Mapping]) -> list[dict]:
    """``collate_fn`` of a slide-level ``DataLoader``: the slide dicts as a list (no tensors are stacked)."""
    return [dict(s) for s in batch]


def prepare_slide_batch(
    batchdata: Sequence[Mapping] | Mapping,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    **kwargs: Any,
) -> tuple[list[dict], torch.Tensor | None]:
    """``prepare_batch`` of a MONAI evaluator over slides collated by :func:`collate_slides`.

    Returns:
        ``(slides, labels)``: one dict per slide of the batch, and the ``(B, 1)`` float slide labels on
        ``device`` when every slide has a ``label`` (``None`` otherwise, e.g. inference or NPL).
    """
    slides = [dict(batchdata)] if isinstance(batchdata, Mapping) else [dict(s) for s in batchdata]
    if not slides or any(s.get(SlideKeys.LABEL) is None for s in slides):
        return slides, None
    labels = torch.as_tensor([float(s[SlideKeys.LABEL]) for s in slides]).reshape(-1, 1)
    if device is not None:
        labels = labels.to(device, non_blocking=non_blocking)
    return slides, labels
