"""Region metrics (OP, PC, mIoU; Tokunaga et al., Eq. 7, as NPL reports them) and the proportion error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.utils import StrEnum, look_up_option

from mixsup_monai.metrics.segmentation import confusion_counts

__all__ = ["RegionMetric", "RegionMetricName", "region_counts", "region_metrics", "proportion_error"]


class RegionMetricName(StrEnum):
    """The value :meth:`RegionMetric.aggregate` returns."""

    OP = "op"
    PC = "pc"
    MIOU = "miou"


def _numpy(x: Any) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def region_counts(
    pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, num_classes: int, ignore_index: int = 255
) -> np.ndarray:
    """``(3, C)`` int64 TP, FP, FN per class of class-index arrays of any (equal) shape.

    Elements whose ``target`` is ``ignore_index`` (the annotators' "unknown", glass) are not counted; a
    ``pred`` of ``ignore_index`` where ``target`` is known (e.g. a patch the model did not predict) raises.

    Args:
        pred: predicted class per patch (or pixel).
        target: true class per patch (or pixel), ``ignore_index`` where unknown.
        num_classes: C.
        ignore_index: the "unknown" value of ``target``.
    """
    return np.stack(confusion_counts(_numpy(pred).reshape(-1), _numpy(target).reshape(-1), num_classes, ignore_index))


def region_metrics(counts: np.ndarray | torch.Tensor, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """OP, PC and mIoU of summed counts (Tokunaga et al., Eq. 7)::

        OP   = Σ_c TP_c / Σ_c (TP_c + FP_c)            (= overall accuracy)
        PC   = 1/M Σ_c TP_c / (TP_c + FP_c)            (mean per-class precision, as printed in Eq. 7)
        mIoU = 1/M Σ_c TP_c / (TP_c + FP_c + FN_c)

    The M classes averaged are those present in the ground truth or in the prediction (``TP + FP + FN >
    0``); a class present in the truth but never predicted has precision 0 (it is missed, not skipped).

    Args:
        counts: ``(3, C)`` TP, FP, FN (e.g. summed :func:`region_counts` over slides).
        class_names: C names for the per-class entries (default ``"0"``, ``"1"``, ...).

    Returns:
        ``{"op", "pc", "miou", "classes_scored", "precision": {name: value}, "iou": {name: value}}``; NaN
        values (no known element at all) for empty counts.
    """
    c = _numpy(counts).astype(np.float64)
    if c.ndim != 2 or c.shape[0] != 3:
        raise ValueError(f"counts must have shape (3, C) (TP, FP, FN per class), got {c.shape}")
    tp, fp, fn = c
    names = [str(i) for i in range(c.shape[1])] if class_names is None else [str(n) for n in class_names]
    if len(names) != c.shape[1]:
        raise ValueError(f"{len(names)} class names for {c.shape[1]} classes")
    scored = (tp + fp + fn) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        iou = np.where(scored, tp / np.maximum(tp + fp + fn, 1), np.nan)
    total = float((tp + fp).sum())
    return {
        "op": float(tp.sum() / total) if total > 0 else float("nan"),
        "pc": float(precision[scored].mean()) if scored.any() else float("nan"),
        "miou": float(iou[scored].mean()) if scored.any() else float("nan"),
        "classes_scored": int(scored.sum()),
        "precision": {n: (float(p) if s else float("nan")) for n, p, s in zip(names, precision, scored)},
        "iou": {n: float(v) for n, v in zip(names, iou)},
    }


def proportion_error(
    predicted: Mapping[str, float] | Sequence[float], true: Mapping[str, float] | Sequence[float]
) -> float:
    """SAE = min(1, Σ_c |TCR_c − PCR_c|) between a predicted and a true class proportion (METHODS.md §3).

    Both are re-normalised to sum 1 first (an all-zero vector stays zero). With mappings, classes missing
    from one side count as 0.
    """
    if isinstance(predicted, Mapping) or isinstance(true, Mapping):
        if not (isinstance(predicted, Mapping) and isinstance(true, Mapping)):
            raise TypeError("predicted and true must both be mappings {class: fraction} or both sequences")
        keys = sorted(set(predicted) | set(true))
        p = np.asarray([float(predicted.get(k, 0.0)) for k in keys])
        t = np.asarray([float(true.get(k, 0.0)) for k in keys])
    else:
        p, t = np.asarray(predicted, np.float64).reshape(-1), np.asarray(true, np.float64).reshape(-1)
        if p.shape != t.shape:
            raise ValueError(f"predicted has {p.size} classes, true has {t.size}")
    if (p < 0).any() or (t < 0).any():
        raise ValueError(f"proportions must be non-negative, got {p.tolist()} and {t.tolist()}")
    p = p / p.sum() if p.sum() > 0 else p
    t = t / t.sum() if t.sum() > 0 else t
    return float(min(1.0, np.abs(p - t).sum()))


class RegionMetric(CumulativeIterationMetric):
    """OP / PC / mIoU (Tokunaga et al., Eq. 7) accumulated over batches of patches (or pixels).

    TP, FP and FN per class are summed over everything seen before the ratios are taken (see
    :func:`region_metrics`). Call it with ``y_pred`` ``(B, C)`` class scores (arg-maxed over dim 1) or
    ``(B,)`` / ``(B, 1)`` class indices, and ``y`` ``(B,)`` / ``(B, 1)`` true class indices with
    ``ignore_index`` (or any negative value) for unknown patches.

    Args:
        num_classes: C.
        metric: what :meth:`aggregate` returns: ``"miou"`` (default), ``"op"`` or ``"pc"``.
        ignore_index: unknown target value.

    Example::

        metric = RegionMetric(num_classes=6)
        metric(y_pred=logits, y=labels)
        miou = metric.aggregate().item()
    """

    def __init__(
        self, num_classes: int, metric: RegionMetricName | str = RegionMetricName.MIOU, ignore_index: int = 255
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        self.metric = look_up_option(metric, RegionMetricName)
        self.ignore_index = int(ignore_index)

    def _indices(self, x: torch.Tensor, scores: bool) -> np.ndarray:
        x = torch.as_tensor(x).detach().cpu()
        if scores and x.ndim == 2 and x.shape[1] > 1:
            x = x.argmax(dim=1)
        return x.reshape(x.shape[0] if x.ndim else 1, -1)[:, 0].numpy().astype(np.int64)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """``(1, 3, C)`` int64 counts of the batch."""
        if y is None:
            raise ValueError("RegionMetric needs the ground truth y")
        pred, target = self._indices(y_pred, scores=True), self._indices(y, scores=False)
        target = np.where(target < 0, self.ignore_index, target)
        return torch.as_tensor(region_counts(pred, target, self.num_classes, self.ignore_index))[None]

    def counts(self) -> np.ndarray:
        """``(3, C)`` summed TP, FP, FN."""
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            return np.zeros((3, self.num_classes), np.int64)
        return data.sum(dim=0).numpy()

    def results(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """Every value of :func:`region_metrics`."""
        return region_metrics(self.counts(), class_names)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        return torch.tensor(self.results()[self.metric.value], dtype=torch.float64)
