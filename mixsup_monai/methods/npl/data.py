"""NPL training data: patch class labels from masks, tumour patches of weak slides, oversampling, loss targets."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from mixsup_monai.data.annotations import labelled_patches
from mixsup_monai.data.identity import slide_id, unique_slide_ids
from mixsup_monai.utils.distributed import split_map
from mixsup_monai.wsi.grid import build_patch_grid
from mixsup_monai.wsi.labels import IGNORE_INDEX, crop_label_map, read_label_map
from mixsup_monai.wsi.reader import DEFAULT_BACKENDS, open_slide
from mixsup_monai.wsi.tissue import detect_tissue

__all__ = [
    "annotation_class_items",
    "proportion_classes",
    "patch_labels",
    "labelled_patch_items",
    "tumour_region",
    "weak_slides",
    "known_region_slides",
    "oversample_by_class",
    "slide_name",
    "NPLTargetd",
    "NPLTargetD",
    "NPLTargetDict",
]

logger = logging.getLogger(__name__)


def slide_name(slide: Mapping | str) -> str:
    """Name of a slide (file stem, :func:`~mixsup_monai.data.slide_id`): its seed key, statistics key and record name.

    Not its path, so that NPL's per-slide draws do not depend on the folder the cohort or the repository lies in.
    """
    return slide_id(slide)


def proportion_classes(classes: Sequence[str], slides: Sequence[Mapping] = (), key: str = "proportions") -> list[str]:
    """The classes the proportions are over: every class named in some slide's ``proportions``, in class order.

    Demo: the 5 adenocarcinoma subtypes (not ``non-cancer``).

    Raises:
        ValueError: no slide has proportions, or a proportion names a class not in ``classes``.
    """
    named: set[str] = set()
    for s in slides:
        props = s.get(key)
        if not props:
            continue
        unknown = sorted(set(props) - set(classes))
        if unknown:
            raise ValueError(
                f"slide {s.get('image')!r}: {key!r} names {unknown}, which are not in classes {list(classes)}"
            )
        named |= set(props)
    if not named:
        raise ValueError(f"no slide has {key!r}: NPL needs weak slides with class proportions")
    return [c for c in classes if c in named]


def patch_labels(
    label_map: np.ndarray,
    downsample: float,
    locations: np.ndarray | Sequence[Sequence[int]],
    size0: int,
    num_classes: int,
    min_known: float = 0.5,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """The class of each patch: the majority class of its known mask pixels.

    A patch whose known (non-``ignore_index``) pixels cover less than ``min_known`` of it is unknown
    (``ignore_index``): it is neither trained on nor scored.

    Args:
        label_map: ``(H, W)`` uint8 label map of a level with ``downsample`` level-0 pixels per pixel.
        downsample: level-0 pixels per label-map pixel.
        locations: ``(N, 2)`` level-0 ``(x, y)`` top-left corners.
        size0: patch edge in level-0 pixels.
        num_classes: C (mask values ``>= C`` other than ``ignore_index`` raise).
        min_known: minimum known share of a patch.
        ignore_index: the "unknown" mask value.

    Returns:
        ``(N,)`` int64 class per patch, ``ignore_index`` where unknown.
    """
    locations = np.asarray(locations, dtype=np.int64).reshape(-1, 2)
    side = max(1, int(round(size0 / float(downsample))))
    out = np.full(len(locations), ignore_index, np.int64)
    for i, (x, y) in enumerate(locations):
        crop = crop_label_map(label_map, downsample, (int(x), int(y)), (size0, size0), (side, side))
        known = crop[crop != ignore_index]
        if known.size < min_known * crop.size or known.size == 0:
            continue
        if int(known.max()) >= num_classes:
            bad = int(known.max())
            raise ValueError(f"mask value {bad} is not a class index 0..{num_classes - 1} or {ignore_index}")
        out[i] = int(np.bincount(known, minlength=num_classes).argmax())
    return out


def labelled_patch_items(
    slides: Sequence[Mapping],
    num_classes: int,
    patch_size: int = 64,
    level: int = 1,
    overlap: int = 0,
    min_known: float = 0.5,
    mask_key: str = "mask",
    backends: Sequence[str] = DEFAULT_BACKENDS,
) -> list[dict]:
    """Patches of fully labelled slides with their class, as items for training or validation.

    Per slide with ``mask`` (label map at ``mask_level``): a patch grid of ``patch_size`` pixels at ``level``
    over the mask's known area (``!= 255``), and each patch's class by :func:`patch_labels`; unknown
    patches are dropped.

    Returns:
        Items ``{"image", "location" (level 0), "size" (level 0), "level", "label" (class index)}``.

    Raises:
        ValueError: no slide has a mask, or the masks give no labelled patch.
    """
    items: list[dict] = []
    labelled = [s for s in slides if s.get(mask_key)]
    if not labelled:
        raise ValueError(f"no slide with {mask_key!r}: NPL needs a few fully labelled slides")
    for slide in labelled:
        label_map = read_label_map(slide[mask_key])
        with open_slide(slide["image"], mpp=slide.get("mpp"), backends=backends) as wsi:
            level_ds = float(wsi.info.level_downsamples[int(slide["mask_level"])])
            tissue = detect_tissue(wsi, user_mask=label_map != IGNORE_INDEX)
            grid = build_patch_grid(
                wsi,
                tissue,
                patch_size=patch_size,
                level=level,
                overlap=overlap,
                min_tissue_fraction=min_known,
                skip_empty=True,
            )
        if not len(grid):
            logger.warning("slide %r: no labelled patch of %d px at level %d", slide["image"], patch_size, level)
            continue
        size0 = int(round(patch_size * grid.downsample))
        labels = patch_labels(label_map, level_ds, grid.locations, size0, num_classes, min_known)
        for (x, y), lab in zip(grid.locations.tolist(), labels.tolist()):
            if lab == IGNORE_INDEX:
                continue
            item = {"image": slide["image"], "location": [x, y], "size": [size0, size0], "level": int(level)}
            item["label"] = int(lab)
            if slide.get("mpp") is not None:
                item["mpp"] = slide["mpp"]
            items.append(item)
    if not items:
        raise ValueError(
            f"the masks of {[slide_name(s) for s in labelled]} give no patch of {patch_size} px at level {level} "
            f"with >= {min_known:.0%} known pixels"
        )
    return items


def tumour_region(path: str, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``(H, W)`` bool tumour region of a ``tumour_mask`` file (1 = tumour, 0 = other tissue, 255 = glass).

    Any value other than 0 and ``ignore_index`` counts as tumour. (Passing the file itself as a tissue mask
    would count the glass, 255, as tissue.)
    """
    m = read_label_map(path)
    return (m != 0) & (m != ignore_index)


def weak_slides(
    slides: Sequence[Mapping],
    predictor: Any | None = None,
    proportions_key: str = "proportions",
    tumour_key: str = "tumour_mask",
    region_key: str = "tumour_region",
    on_empty: str = "skip",
) -> list[dict]:
    """The weakly labelled slides (with ``proportions``) NPL predicts each round, restricted to their tumour.

    Each slide gets ``region_key``: the bool tumour region of its ``tumour_key`` file
    (:func:`tumour_region`), which the E-step predictor uses as its tissue mask
    (``SlidePatchPredictor(tissue_mask_key=region_key)``), so only tumour patches are predicted -- the
    proportions are over the tumour area. With ``predictor``, the tumour patch grid of every slide is
    built now (under ``torchrun`` each rank builds its share): a slide whose tumour holds no patch is skipped
    with a warning naming it (``on_empty="skip"``, default) or refused (``"error"``).

    Raises:
        ValueError: no slide with proportions; two slides with the same file name (:func:`slide_name`, the key
            of their random draws); a slide with proportions but no ``tumour_key``; every slide
            (or, with ``on_empty="error"``, some slide) without a tumour patch.
    """
    if on_empty not in ("skip", "error"):
        raise ValueError(f"on_empty must be 'skip' or 'error', got {on_empty!r}")
    weak = [dict(s) for s in slides if s.get(proportions_key)]
    if not weak:
        raise ValueError(f"no training slide with {proportions_key!r}: NPL needs weakly labelled slides")
    unique_slide_ids(weak)  # the slide name keys NPL's per-slide draws and statistics: two files may not share one
    missing = [s["image"] for s in weak if not s.get(tumour_key)]
    if missing:
        raise ValueError(
            f"slides with {proportions_key!r} but no {tumour_key!r} (the tumour outline the proportions refer to): "
            f"{missing}; add a {tumour_key!r} label map (1 = tumour, 0 = other tissue, 255 = glass) to each"
        )
    for s in weak:
        s[region_key] = tumour_region(s[tumour_key])
    if predictor is None:
        return weak
    # under torchrun each rank builds the grids of its share (the E-step reads the others' from its folder)
    sizes = split_map(lambda s: len(predictor.grid(s)[0]), weak)
    empty = [s["image"] for s, size in zip(weak, sizes) if size == 0]
    if empty and (on_empty == "error" or len(empty) == len(weak)):
        raise ValueError(
            f"slides with {proportions_key!r} but no tumour patch of {predictor.patch_size} px (level "
            f"{predictor.level}, >= {predictor.min_tissue_fraction:.0%} tumour): {empty}; check their "
            f"{tumour_key!r} or lower the patch size / min_tissue_fraction"
        )
    for path in empty:
        logger.warning("slide %r has proportions but no tumour patch: skipped by NPL", path)
    return [s for s in weak if s["image"] not in set(empty)]


def known_region_slides(
    slides: Sequence[Mapping],
    mask_key: str = "mask",
    region_key: str = "known_region",
    keys: Sequence[str] | None = ("image", "mpp", "mask", "mask_level", "proportions"),
) -> list[dict]:
    """Fully labelled slides (evaluation) with ``region_key``: the bool area where their mask is known.

    Metrics are computed over the patches with a known class (Tokunaga et al.: regions marked "unknown" are
    excluded), so evaluation grids are laid over the mask's known area (``mask != 255``) instead of a
    tissue detection (which, on lung, misses pale alveolar tissue). Slides without ``mask_key`` are
    dropped; ``keys`` (``None``: all) are kept.
    """
    out = []
    for s in slides:
        if not s.get(mask_key):
            continue
        d = dict(s) if keys is None else {k: s[k] for k in keys if k in s}
        d[region_key] = read_label_map(s[mask_key]) != IGNORE_INDEX
        out.append(d)
    if not out:
        raise ValueError(f"no slide with {mask_key!r} to evaluate")
    return out


def oversample_by_class(items: Sequence[Mapping], label_key: str = "label") -> list[dict]:
    """Random-oversampling without randomness: every class repeated (cyclically) up to the largest class.

    The paper balances the positive pseudo labels by oversampling (its ablation: NPL without it fails).
    Items are grouped by ``item[label_key]``; the output lists every class ``max_count`` times, classes in
    ascending order, so a uniform draw from it is a class-balanced draw.
    """
    by_class: dict[int, list[dict]] = {}
    for it in items:
        by_class.setdefault(int(it[label_key]), []).append(dict(it))
    if not by_class:
        return []
    top = max(len(v) for v in by_class.values())
    return [members[i % len(members)] for c in sorted(by_class) for members in [by_class[c]] for i in range(top)]


class NPLTargetd(MapTransform):
    """The training target of a patch as one ``(1 + C,)`` float tensor: ``[class or -1, not-class multi-hot]``.

    One format for every pool, so a batch can mix them: a supervised or positive pseudo-labelled patch
    has ``label_key`` (class index); a negative pseudo-labelled patch has ``negative_key`` (``(C,)`` bool
    "not c", accumulated over rounds); either may be missing. Read by
    :class:`~mixsup_monai.methods.npl.PositiveNegativeLoss`.

    Args:
        keys: output key (default ``"label"``, replacing the class index).
        num_classes: C.
        label_key: item key of the class index (absent or negative: no positive label).
        negative_key: item key of the ``(C,)`` negative labels.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        num_classes: int = 2,
        label_key: str = "label",
        negative_key: str = "negative",
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        self.label_key = label_key
        self.negative_key = negative_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        target = torch.zeros(1 + self.num_classes, dtype=torch.float32)
        label = d.get(self.label_key)
        cls = -1 if label is None else int(torch.as_tensor(label).reshape(-1)[0])
        if cls >= self.num_classes:
            raise ValueError(f"patch at {d.get('location')!r}: class {cls} is not in 0..{self.num_classes - 1}")
        target[0] = float(cls if cls >= 0 else -1)
        negative = d.get(self.negative_key)
        if negative is not None:
            neg = torch.as_tensor(np.asarray(negative)).reshape(-1)
            if neg.numel() != self.num_classes:
                raise ValueError(f"negative labels have {neg.numel()} entries, expected {self.num_classes}")
            target[1:] = neg.float()
        for key in self.keys:  # the output key need not exist yet (negative pool items)
            d[key] = target.clone()
        d.pop(self.negative_key, None)
        return d


NPLTargetD = NPLTargetDict = NPLTargetd


def annotation_class_items(
    records: Sequence[Mapping],
    patch_size: int,
    mpp: float,
    num_classes: int,
    input_mpp: float = 1.0,
    min_known: float = 0.5,
) -> list[dict]:
    """Patches of labelled tiles (MONAI Label's datastore) with their class, like :func:`labelled_patch_items`.

    The tiles are cut at the network's resolution by :func:`~mixsup_monai.data.annotation_patch_items`; each
    patch's class is the majority of its labelled pixels (its labelled pixels per class; ties to the lower class, as
    :func:`patch_labels`), and patches labelled on less than ``min_known`` of their area are dropped.

    Args:
        records: ``[{"image": tile, "label": label map}, ...]``; label values are the class indices, 255 unlabelled.
        patch_size: patch edge in network pixels.
        mpp: microns per pixel the network trains at.
        num_classes: C.
        input_mpp: microns per pixel of tiles whose file does not state it.
        min_known: minimum labelled share of a patch.

    Returns:
        Items ``{"image", "location", "size" (tile pixels), "level": 0, "mpp", "label" (class index)}``.
    """
    keep = ("image", "location", "size", "level", "mpp")
    return [
        {key: patch[key] for key in keep} | {"label": int(np.argmax(counts))}
        for patch, counts in labelled_patches(records, patch_size, mpp, num_classes, input_mpp, min_labelled=min_known)
    ]
