"""Segmentation metrics: IoU / Dice (plain and masked in a boundary band, one MONAI metric) and component F1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.utils import StrEnum, look_up_option
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

__all__ = [
    "IoUDiceMetric",
    "SegmentationIoUDice",
    "boundary_band",
    "component_f1",
    "confusion_counts",
    "iou_dice",
    "masked_iou_dice",
    "per_class_component_f1",
]


class IoUDiceMetric(StrEnum):
    """Which value :meth:`SegmentationIoUDice.aggregate` returns."""

    IOU = "iou"
    DICE = "dice"


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def boundary_band(mask: np.ndarray | torch.Tensor, distance: float, ignore_index: int | None = 255) -> np.ndarray:
    """Pixels within ``distance`` of the ground-truth boundary (the region of the masked IoU / Dice).

    Zhao et al., "Label super resolution with inter-instance loss", Sec. 3.2.2 / Table 9: IoU and Dice are
    computed "only in areas within a distance of 240 pixels (1000 microns, width of an input patch) away from
    the ground truth cancer/non-cancer boundaries". Convention here: a pixel of class c is in the band when
    the Euclidean distance from its centre to the centre of the nearest pixel of a *different* class is
    ≤ ``distance``. The band therefore reaches ``distance`` pixels into each side (total width ≈ 2 ×
    ``distance``); the paper's setting is ``distance`` = one block width at the evaluation scale. The two
    pixels that touch across the boundary are at distance 1, so ``distance = 1`` gives a 2-pixel-wide band.
    The image border is not a boundary; a mask with a single class has an empty band.

    Args:
        mask: (H, W) (or any N-D) ground truth, bool or integer label map.
        distance: band half-width in pixels (≥ 0).
        ignore_index: label of unlabelled pixels: they neither create boundaries nor belong to the band
            (None: no such label).

    Returns:
        bool array of ``mask``'s shape.
    """
    if distance < 0:
        raise ValueError(f"distance = {distance}: expected a band half-width >= 0 (pixels)")
    labels = _to_numpy(mask)
    labels = labels.astype(np.int64) if labels.dtype == bool else labels
    valid = np.ones(labels.shape, bool) if ignore_index is None else labels != ignore_index
    band = np.zeros(labels.shape, dtype=bool)
    classes = np.unique(labels[valid])
    if classes.size < 2:
        return band
    for c in classes.tolist():
        is_c = valid & (labels == c)
        other = valid & ~is_c
        # distance of every pixel to the nearest pixel of another (valid) class
        dist = ndimage.distance_transform_edt(~other)
        band |= is_c & (dist <= distance)
    return band


def confusion_counts(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    num_classes: int,
    ignore_index: int | None = 255,
    region_mask: np.ndarray | torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class true positives, false positives and false negatives of a label map.

    Pixels where ``target == ignore_index`` or outside ``region_mask`` are not counted.

    Args:
        pred: (H, W) predicted label map (bool or int).
        target: (H, W) ground-truth label map (bool or int, ``ignore_index`` for unlabelled pixels).
        num_classes: C.
        ignore_index: label of unlabelled target pixels (None: none).
        region_mask: optional (H, W) bool mask of the pixels to evaluate (e.g. :func:`boundary_band`).

    Returns:
        (tp, fp, fn), each an int64 array of shape (C,).
    """
    p = _to_numpy(pred).astype(np.int64)
    t = _to_numpy(target).astype(np.int64)
    if p.shape != t.shape:
        raise ValueError(f"pred has shape {p.shape} and target {t.shape}: expected the same shape")
    valid = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
    if region_mask is not None:
        region = _to_numpy(region_mask).astype(bool)
        if region.shape != t.shape:
            raise ValueError(f"region_mask has shape {region.shape}, expected the target's shape {t.shape}")
        valid &= region
    p, t = p[valid], t[valid]
    for name, arr in (("pred", p), ("target", t)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            bad = sorted(set(arr[(arr < 0) | (arr >= num_classes)].tolist()))[:10]
            raise ValueError(f"{name} holds labels {bad}: expected values in [0, {num_classes}) (or ignore_index)")
    cm = np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    tp = np.diag(cm).astype(np.int64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    return tp, fp.astype(np.int64), fn.astype(np.int64)


def _scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU = TP / (TP + FP + FN), Dice = 2TP / (2TP + FP + FN); NaN where TP + FP + FN = 0."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / denom, np.nan)
        dice = np.where(denom > 0, 2 * tp / (denom + tp), np.nan)
    return iou, dice


def _result(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, class_index: int | None) -> dict[str, Any]:
    iou, dice = _scores(tp, fp, fn)
    if class_index is not None:
        c = class_index
        return {
            "iou": float(iou[c]),
            "dice": float(dice[c]),
            "tp": int(tp[c]),
            "fp": int(fp[c]),
            "fn": int(fn[c]),
        }
    with np.errstate(invalid="ignore"):
        mean_iou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
        mean_dice = float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan")
    return {
        "iou": iou,
        "dice": dice,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "mean_iou": mean_iou,
        "mean_dice": mean_dice,
    }


def iou_dice(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    num_classes: int = 2,
    class_index: int | None = 1,
    ignore_index: int | None = 255,
    region_mask: np.ndarray | torch.Tensor | None = None,
) -> dict[str, Any]:
    """IoU and Dice of a predicted label map, for one class or every class.

    Args:
        pred: (H, W) predicted label map (a bool mask counts as classes {0, 1}).
        target: (H, W) ground-truth label map.
        num_classes: C (default 2: background / tumour).
        class_index: the class to score (default 1, tumour); None scores every class.
        ignore_index: unlabelled target pixels, excluded (None: none).
        region_mask: optional (H, W) bool mask of the pixels to score.

    Returns:
        with ``class_index``: {"iou", "dice"} floats and {"tp", "fp", "fn"} ints of that class;
        without: per-class (C,) arrays under the same keys plus "mean_iou" / "mean_dice" (NaN-mean over
        classes).
        A class absent from both pred and target in the region has IoU = Dice = NaN.
    """
    if class_index is not None and not 0 <= class_index < num_classes:
        raise ValueError(f"class_index = {class_index}: expected None or an integer in [0, {num_classes})")
    tp, fp, fn = confusion_counts(pred, target, num_classes, ignore_index, region_mask)
    return _result(tp, fp, fn, class_index)


def masked_iou_dice(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    band_distance: float,
    num_classes: int = 2,
    class_index: int | None = 1,
    ignore_index: int | None = 255,
) -> dict[str, Any]:
    """IoU / Dice inside :func:`boundary_band` (pixels within ``band_distance`` of the target's boundary).

    The paper's masked IoU / Dice (Zhao et al., Sec. 3.2.2, Tables 4 and 9; ``band_distance`` = one block
    width).
    Same arguments and return value as :func:`iou_dice`; the result also holds "band_pixels".
    """
    band = boundary_band(target, band_distance, ignore_index=ignore_index)
    out = iou_dice(pred, target, num_classes, class_index, ignore_index, region_mask=band)
    out["band_pixels"] = int(band.sum())
    return out


class SegmentationIoUDice(CumulativeIterationMetric):
    """Global IoU / Dice accumulated over many images (blocks, slides), optionally inside a boundary band.

    TP, FP and FN are summed over every image before the ratio is taken (the "global" IoU, as for one big
    image made of all evaluation tiles), not averaged over per-image IoUs: tiles with little of a class do not
    weigh as much as tiles full of it, and tiles without the class do not produce undefined values (the LSR
    paper's evaluation). Each image adds its (3, C) counts to MONAI's ``Cumulative`` buffers, which are
    gathered over DDP ranks when the value is aggregated: ranks that evaluated different slides report the
    score of all of them.

    Call it with ``y_pred`` of shape (B, C, H, W) class scores or probabilities (arg-maxed over channels; the
    first maximal class wins ties) or (B, 1, H, W) class indices, and ``y`` of shape (B, 1, H, W) class indices
    (or (B, C, H, W) one-hot), or with lists of channel-first tensors (an engine's decollated output). With
    ``num_classes = 2`` a one-channel ``y_pred`` is the foreground probability (or a 0 / 1 map): foreground
    where it is > 0.5. ``y`` may hold ``ignore_index`` (not counted). With ``band_distance`` set, only pixels
    of :func:`boundary_band` of each ``y`` count (the masked IoU / Dice of Zhao et al., Sec. 3.2.2).

    Args:
        num_classes: C.
        class_index: the class :meth:`aggregate` reports (default 1); None: per-class (C,) values.
        band_distance: half-width of the boundary band in pixels, or None for plain IoU / Dice.
        ignore_index: unlabelled target pixels (None: none).
        metric: "iou" (default) or "dice": what :meth:`aggregate` returns (:meth:`results` gives both).

    Example::

        metric = SegmentationIoUDice(band_distance=64)
        for batch in loader:
            metric(y_pred=model(batch["image"]).softmax(1), y=batch["label"])
        masked_iou = metric.aggregate().item()

    In an evaluator (decollated ``pred`` / ``label``), through MONAI's metric handler::

        IgniteMetricHandler(SegmentationIoUDice(band_distance=64), output_transform=from_engine(["pred", "label"]))
    """

    def __init__(
        self,
        num_classes: int = 2,
        class_index: int | None = 1,
        band_distance: float | None = None,
        ignore_index: int | None = 255,
        metric: IoUDiceMetric | str = IoUDiceMetric.IOU,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if class_index is not None and not 0 <= class_index < num_classes:
            raise ValueError(f"class_index = {class_index}: expected None or an integer in [0, {num_classes})")
        if band_distance is not None and band_distance < 0:
            raise ValueError(f"band_distance = {band_distance}: expected None or a band half-width >= 0 (pixels)")
        self.num_classes = num_classes
        self.class_index = class_index
        self.band_distance = band_distance
        self.ignore_index = ignore_index
        self.metric = look_up_option(metric, IoUDiceMetric)

    def _labels(self, x: torch.Tensor, name: str) -> np.ndarray:
        """(B, H, W) class indices of (B, 1 or C, H, W) ``y_pred`` or ``y``."""
        if x.ndim < 3:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected (B, 1 or C, H, W)")
        if x.shape[1] > 1:
            x = x.argmax(dim=1)
        elif name == "y_pred" and self.num_classes == 2:
            x = x[:, 0] > 0.5  # foreground probability; a 0 / 1 label map passes unchanged
        else:
            x = x[:, 0]
        return _to_numpy(x)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """(B, 3, C) int64 counts (TP, FP, FN) per image."""
        if y is None:
            raise ValueError("SegmentationIoUDice needs the ground truth y")
        preds, targets = self._labels(y_pred, "y_pred"), self._labels(y, "y")
        out = []
        for p, t in zip(preds, targets):
            region = None if self.band_distance is None else boundary_band(t, self.band_distance, self.ignore_index)
            out.append(np.stack(confusion_counts(p, t, self.num_classes, self.ignore_index, region)))
        return torch.as_tensor(np.stack(out), dtype=torch.int64)

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tp, fp, fn), each (C,), summed over everything accumulated (on every rank) since the last reset."""
        buffer = self.get_buffer()
        if not isinstance(buffer, torch.Tensor) or buffer.numel() == 0:
            zeros = np.zeros(self.num_classes, dtype=np.int64)
            return zeros, zeros.copy(), zeros.copy()
        total = buffer.sum(dim=0).cpu().numpy()
        return total[0], total[1], total[2]

    def results(self) -> dict[str, Any]:
        """Every value: as :func:`iou_dice` returns for the accumulated counts."""
        return _result(*self.counts(), self.class_index)

    def aggregate(self, metric: IoUDiceMetric | str | None = None) -> torch.Tensor:  # type: ignore[override]
        """The global IoU (or Dice) of ``class_index`` as a 0-dim float64 tensor ((C,) when it is None).

        NaN when the class is absent from both predictions and targets of every counted pixel.
        """
        key = self.metric if metric is None else look_up_option(metric, IoUDiceMetric)
        return torch.as_tensor(self.results()[key.value], dtype=torch.float64)


# ---------------------------------------------------------------------- component F1 (cell task)
def component_f1(
    pred_mask: np.ndarray | torch.Tensor,
    dots: np.ndarray | Sequence[Sequence[float]],
    radius: float,
    connectivity: int = 2,
    min_area: int = 0,
) -> dict[str, float]:
    """F1 of detected connected components against dot annotations (Zhao et al., Sec. 3.1.3, Eq. 12–13).

    Each connected component of ``pred_mask`` is one detection. A detection and a dot may match when the
    dot is within ``radius`` pixels of the component (Euclidean distance from the dot to the nearest pixel of
    the component; 0 when the dot lies inside it). Matching is one-to-one (each dot matched at most once,
    each component at most once) and maximises the number of matches (ties: smallest total distance),
    by the Hungarian algorithm. precision = matches / detections, recall = matches / dots,
    F1 = 2 · matches / (detections + dots); NaN when a denominator is 0.

    Args:
        pred_mask: (H, W) bool mask of one class.
        dots: (N, 2) dot coordinates of that class as (row, col) pixel indices.
        radius: matching radius r in pixels (paper: r = 10, about a cell radius).
        connectivity: 1 (4-connected) or 2 (8-connected, default) components.
        min_area: components with fewer pixels are not detections.

    Returns:
        {"f1", "precision", "recall", "tp", "n_detections", "n_dots"}.
    """
    mask = _to_numpy(pred_mask).astype(bool)
    pts = np.asarray(dots, dtype=np.float64).reshape(-1, 2)
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    labels, n = ndimage.label(mask, structure=structure)
    objects = ndimage.find_objects(labels)
    comps = [k for k in range(1, n + 1) if min_area <= 0 or (labels[objects[k - 1]] == k).sum() >= min_area]
    n_det, n_dots = len(comps), pts.shape[0]
    tp = 0
    if n_det and n_dots:
        big = 1e9
        cost = np.full((n_dots, n_det), big)
        for j, k in enumerate(comps):
            sl = objects[k - 1]
            lo = np.array([s.start for s in sl], dtype=np.float64)
            hi = np.array([s.stop - 1 for s in sl], dtype=np.float64)
            near = np.all((pts >= lo - radius) & (pts <= hi + radius), axis=1)
            if not near.any():
                continue
            coords = np.argwhere(labels[sl] == k).astype(np.float64) + lo
            d = np.sqrt(((pts[near, None, :] - coords[None, :, :]) ** 2).sum(-1)).min(axis=1)
            cost[np.flatnonzero(near), j] = np.where(d <= radius, d, big)
        rows, cols = linear_sum_assignment(cost)
        tp = int((cost[rows, cols] < big).sum())
    precision = tp / n_det if n_det else float("nan")
    recall = tp / n_dots if n_dots else float("nan")
    f1 = 2 * tp / (n_det + n_dots) if (n_det + n_dots) else float("nan")
    return {
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
        "tp": tp,
        "n_detections": n_det,
        "n_dots": n_dots,
    }


def per_class_component_f1(
    pred: np.ndarray | torch.Tensor,
    dots: Mapping[int, np.ndarray | Sequence[Sequence[float]]],
    radius: float,
    class_names: Mapping[int, str] | None = None,
    connectivity: int = 2,
    min_area: int = 0,
) -> dict[str, Any]:
    """:func:`component_f1` for each class of a label map (the cell-type table of Zhao et al., Table 3).

    Args:
        pred: (H, W) predicted label map (e.g. 0 = background, 1..5 = cell types).
        dots: class index → (N_c, 2) (row, col) dots of that class; the classes scored are its keys.
        radius: matching radius in pixels.
        class_names: optional class index → name for the output keys.
        connectivity, min_area: see :func:`component_f1`.

    Returns:
        {"per_class": {name: component_f1 result}, "mean_f1": NaN-mean of the per-class F1}.
    """
    labels = _to_numpy(pred)
    per_class = {}
    for c, class_dots in dots.items():
        name = class_names[c] if class_names is not None else str(c)
        per_class[name] = component_f1(labels == c, class_dots, radius, connectivity, min_area)
    f1s = np.array([r["f1"] for r in per_class.values()], dtype=np.float64)
    mean_f1 = float(np.nanmean(f1s)) if np.isfinite(f1s).any() else float("nan")
    return {"per_class": per_class, "mean_f1": mean_f1}
