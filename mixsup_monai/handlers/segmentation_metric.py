"""Ignite metric accumulating IoU / Dice of one class over slides, optionally in a boundary band."""

from __future__ import annotations

import numpy as np
import torch
from monai.utils import look_up_option, min_version, optional_import

Metric, _ = optional_import("ignite.metrics", "0.4.11", min_version, "Metric")
reinit__is_reduced, _ = optional_import("ignite.metrics.metric", "0.4.11", min_version, "reinit__is_reduced")
sync_all_reduce, _ = optional_import("ignite.metrics.metric", "0.4.11", min_version, "sync_all_reduce")

__all__ = ["SegmentationMetricHandler"]

METRICS = ("iou", "dice", "masked_iou", "masked_dice")


class SegmentationMetricHandler(Metric):
    """IoU or Dice of ``class_index`` from summed TP / FP / FN over every slide of an evaluation.

    Global counts, not a mean of per-slide scores: a slide with little tumour weighs little, as in
    the LSR paper's evaluation. ``masked_*`` counts only pixels within the band of ``band_distance``
    pixels around the ground-truth boundary (:func:`mixsup_monai.metrics.boundary_band`; paper: one block
    width at the network's scale), where a low-resolution model cannot be right by construction.

    Counts are summed over DDP ranks before the score is computed.

    Reads the engine output after decollation: per item ``pred`` ``(C, H, W)`` class probabilities or
    scores and ``label`` ``(1, H, W)`` class indices (``ignore_index`` excluded).

    Args:
        metric: ``"iou"``, ``"dice"``, ``"masked_iou"`` or ``"masked_dice"``.
        class_index: the class scored.
        band_distance: pixels within this distance of the ground-truth boundary are scored (``masked_*`` only).
        ignore_index: label value excluded from the counts.
    """

    def __init__(
        self,
        metric: str = "iou",
        class_index: int = 1,
        band_distance: int = 64,
        ignore_index: int = 255,
        pred_key: str = "pred",
        label_key: str = "label",
        output_transform=lambda x: x,
        device: str | torch.device = "cpu",
    ):
        self.metric = look_up_option(metric, METRICS)
        self.class_index = class_index
        self.band_distance = band_distance
        self.ignore_index = ignore_index
        self.pred_key = pred_key
        self.label_key = label_key
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._tp = self._fp = self._fn = 0

    @reinit__is_reduced
    def update(self, output) -> None:
        from mixsup_monai.metrics.segmentation import boundary_band, confusion_counts

        for item in output if isinstance(output, list) else [output]:
            scores = item[self.pred_key].detach().cpu()
            label = item[self.label_key].detach().cpu().numpy().reshape(scores.shape[-2:])
            pred = scores.argmax(0).numpy() if scores.shape[0] > 1 else (scores[0].numpy() > 0.5).astype(np.int64)
            num_classes = max(int(scores.shape[0]), 2)
            band = (
                boundary_band(label, self.band_distance, self.ignore_index)
                if self.metric.startswith("masked")
                else None
            )
            tp, fp, fn = confusion_counts(pred, label, num_classes, self.ignore_index, region_mask=band)
            self._tp += int(tp[self.class_index])
            self._fp += int(fp[self.class_index])
            self._fn += int(fn[self.class_index])

    @sync_all_reduce("_tp", "_fp", "_fn")
    def compute(self) -> float:
        tp, fp, fn = self._tp, self._fp, self._fn
        if tp + fp + fn == 0:
            return float("nan")
        if self.metric.endswith("dice"):
            return 2 * tp / (2 * tp + fp + fn)
        return tp / (tp + fp + fn)
