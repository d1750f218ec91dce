"""Blocks with low-resolution labels (LSR): datalist ``blocks`` entries turned into dataset items."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from mixsup_monai.data.datalist import slides_of
from mixsup_monai.wsi.labels import read_label_map

__all__ = ["block_items", "block_label_map", "mask_estimation_samples"]


def block_items(datalist: Mapping, sections: str | Iterable[str], require_mask: bool = False) -> list[dict]:
    """One item per block of the given sections, for :class:`~mixsup_monai.transforms.LoadSlideRegiond`.

    Each item: ``image`` (slide path), ``location`` ``[x, y]`` and ``size`` ``[w, h]`` in level-0 pixels,
    ``label`` = ``z`` (the block's low-resolution label, what the LSR loss is trained on), ``slide``
    (index of the slide in the sections' order), and the slide's ``mask`` / ``mask_level`` / ``mpp`` when
    present (pixel truth for evaluation; never used by the LSR loss).

    Args:
        datalist: a loaded datalist (:func:`~mixsup_monai.data.load_datalist`).
        sections: ``"training"``, ``"validation"``, ``"test"`` or several of them.
        require_mask: keep only blocks of slides with a ``mask`` (evaluation).

    Raises:
        ValueError: when the sections hold no block at all.
    """
    items = []
    for slide_index, slide in enumerate(slides_of(datalist, sections)):
        if require_mask and "mask" not in slide:
            continue
        extra = {key: slide[key] for key in ("mask", "mask_level", "mpp") if key in slide}
        for block in slide.get("blocks", []):
            items.append(
                {
                    "image": slide["image"],
                    "location": list(block["location"]),
                    "size": list(block["size"]),
                    "label": int(block["z"]),
                    "z": int(block["z"]),
                    "slide": slide_index,
                    **extra,
                }
            )
    if not items:
        what = "with a 'mask' " if require_mask else ""
        raise ValueError(
            f"datalist {datalist.get('datalist_path', '<dict>')!r}: no blocks in slides {what}of section(s) "
            f"{sections!r}; LSR expects 'blocks': [{{'location': [x, y], 'size': [w, h], 'z': int}}, ...]"
        )
    return items


def mask_estimation_samples(
    datalist: Mapping, blocks_per_z: int = 12, sections: str | Iterable[str] = "training", seed: int = 0
) -> Iterator[tuple[int, np.ndarray]]:
    """``(z, label map)`` of up to ``blocks_per_z`` random blocks per z whose slide has a ``mask``.

    The input of :func:`~mixsup_monai.methods.lsr.estimate_label_stats` for the paper's "mask estimation" of
    p(c | z) (appendix B.2): a few blocks per low-resolution label with pixel truth. Each label map is
    the block's part of the slide's mask at the mask's own resolution (no resampling of labels).
    """
    from mixsup_monai.wsi.cache import get_slide
    from mixsup_monai.wsi.labels import crop_label_map

    items = block_items(datalist, sections, require_mask=True)
    rng = np.random.default_rng(seed)
    by_z: dict[int, list[dict]] = {}
    for item in items:
        by_z.setdefault(item["z"], []).append(item)
    label_maps: dict[str, np.ndarray] = {}
    for z in sorted(by_z):
        candidates = by_z[z]
        chosen = rng.choice(len(candidates), size=min(blocks_per_z, len(candidates)), replace=False)
        for index in sorted(chosen):
            item = candidates[index]
            if item["mask"] not in label_maps:
                label_maps[item["mask"]] = read_label_map(item["mask"])
            downsample = get_slide(item["image"], item.get("mpp")).info.level_downsamples[int(item["mask_level"])]
            out_size = [max(1, round(s / downsample)) for s in item["size"]]
            yield z, crop_label_map(label_maps[item["mask"]], downsample, item["location"], item["size"], out_size)


def block_label_map(
    blocks: Iterable[Mapping], class_means: Mapping[int, np.ndarray], downsample: float, shape: tuple[int, int]
) -> np.ndarray:
    """The low-resolution label map of a slide: each block painted with its z's mean class fractions.

    The paper's "low resolution model" baseline (Zhao et al., Table 4): the block labels themselves,
    up-sampled, as a ``(L, H, W)`` map of class fractions on a grid of ``downsample`` level-0 px per
    pixel; pixels outside every block are class 0.

    Args:
        blocks: the slide's ``blocks`` (``location``, ``size`` level 0, ``z``).
        class_means: ``{z: (L,) mean class fractions η_{·,z}}`` (e.g. from a :class:`LabelStatsTable`).
        downsample: level-0 pixels per output pixel.
        shape: ``(H, W)`` of the output.
    """
    num_classes = len(next(iter(class_means.values())))
    out = np.zeros((num_classes, *shape), np.float32)
    out[0] = 1.0
    for block in blocks:
        (x, y), (w, h) = block["location"], block["size"]
        x0, y0 = round(x / downsample), round(y / downsample)
        x1, y1 = round((x + w) / downsample), round((y + h) / downsample)
        out[:, y0:y1, x0:x1] = np.asarray(class_means[int(block["z"])], np.float32)[:, None, None]
    return out
