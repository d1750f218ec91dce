"""Ignite handlers of slide-level classification: per-slide outputs (heat map, top-K JSON) and slide metrics."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import min_version, optional_import

from mixsup_monai.metrics.slide import save_roc_png, slide_classification_metrics
from mixsup_monai.utils.distributed import is_rank0
from mixsup_monai.utils.io import write_json_atomic
from mixsup_monai.visualize.geojson import patches_to_geojson, write_geojson
from mixsup_monai.visualize.overlay import heatmap_overlay, save_png
from mixsup_monai.wsi.cache import get_slide

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["SlideResultSaver", "SlideMetricsSaver"]

logger = logging.getLogger(__name__)


def top_k_geojson(top_k: list[dict]) -> dict:
    """MixSup's top-K patches (``<stem>.json``'s ``top_k``) as QuPath tiles, best first, both probabilities kept."""
    if not top_k:
        return {"type": "FeatureCollection", "features": []}
    scores = {k: np.array([p[k] for p in top_k], np.float64) for k in ("patch_probability", "max_pixel_probability")}
    features = []
    for patch, rank in zip(top_k, range(len(top_k))):  # patches may differ in size at a slide's edge
        one = patches_to_geojson(
            np.array([[patch["x"], patch["y"]]]),
            (patch["width"], patch["height"]),
            {k: v[rank : rank + 1] for k, v in scores.items()},
            class_name="Tumor",
            object_type="tile",
        )
        features += one["features"]
    return {"type": "FeatureCollection", "features": features}


def _value(x: Any) -> float:
    if torch.is_tensor(x):
        return float(x.detach().reshape(-1)[0].cpu())
    return float(np.asarray(x).reshape(-1)[0])


def _per_slide(output: Any) -> list[dict]:
    """The evaluator's output as one ``{"pred", "label"}`` dict per slide, decollated or not.

    Slide-level evaluators run with ``decollate=False`` (their batch is a list of slide dicts, which MONAI's
    ``Decollated`` would take apart key by key); their output is then ``{"pred": (B, 1), "label": (B, 1) or
    None}``.
    """
    if isinstance(output, list):
        return output
    pred, label = output.get("pred"), output.get("label")
    n = 0 if pred is None else len(pred)
    return [{"pred": pred[i], "label": None if label is None else label[i]} for i in range(n)]


class SlideResultSaver:
    """Save what a slide-level inferer found, per slide: the picture, the number, the places to look.

    Reads ``engine.inferer.results`` (:class:`~mixsup_monai.methods.mixsup.SlideTopKInferer`) after every
    iteration and writes, for slide ``<stem>``:

    * ``<stem>_heatmap.png`` -- probability heat map over the slide thumbnail;
    * ``<stem>_prob.png`` -- the probability map alone (0-255);
    * ``<stem>.json`` -- ``{"image", "probability", "patches", "top_k": [{"rank", "x", "y", "width",
      "height" (level-0 box), "level", "max_pixel_probability", "patch_probability"}, ...]}``;
    * ``<stem>_top_k.geojson`` -- the top-K patches as QuPath tiles with both probabilities as measurements;

    and at ``COMPLETED`` ``predictions.csv`` (``image, probability[, label]``). Rank 0 only.

    Args:
        output_dir: folder of the outputs.
    """

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)
        self.rows: list[dict] = []

    def attach(self, engine: Any) -> None:
        if not engine.has_event_handler(self.started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.started)
        if not engine.has_event_handler(self.iteration_completed, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        if not engine.has_event_handler(self.completed, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Any) -> None:
        self.rows = []

    def iteration_completed(self, engine: Any) -> None:
        results = getattr(engine.inferer, "results", None)
        if results is None:
            raise TypeError(
                "SlideResultSaver needs an inferer with per-slide results (SlideTopKInferer), got "
                f"{type(engine.inferer).__name__}"
            )
        labels = _per_slide(engine.state.output)
        for i, res in enumerate(results):
            row = {"image": res["image"], "probability": res["probability"]}
            label = labels[i].get("label") if i < len(labels) and isinstance(labels[i], dict) else None
            if label is not None:
                row["label"] = int(_value(label))
            self.rows.append(row)
            if is_rank0():
                self.save(res)

    def save(self, res: dict) -> None:
        stem = Path(res["image"]).stem
        heat = np.asarray(res["heatmap"], np.float32)
        w0, h0 = res["slide_size"]
        thumb = get_slide(res["image"]).read_scaled(
            location=(0, 0), size=(w0, h0), out_size=(heat.shape[1], heat.shape[0])
        )
        save_png(heatmap_overlay(thumb, heat, alpha=0.6), self.output_dir / f"{stem}_heatmap.png")
        save_png((np.clip(heat, 0, 1) * 255).astype(np.uint8), self.output_dir / f"{stem}_prob.png")
        record = {k: v for k, v in res.items() if k != "heatmap"}
        write_json_atomic(self.output_dir / f"{stem}.json", record)
        write_geojson(self.output_dir / f"{stem}_top_k.geojson", top_k_geojson(record["top_k"]))
        logger.info(
            "slide %s: probability %.4f, %d tissue patches; outputs in %s",
            stem,
            res["probability"],
            res["patches"],
            self.output_dir,
        )

    def completed(self, engine: Any) -> None:
        if not is_rank0() or not self.rows:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        keys = ["image", "probability"] + (["label"] if all("label" in r for r in self.rows) else [])
        with open(self.output_dir / "predictions.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)


class SlideMetricsSaver:
    """Slide metrics at the end of an evaluation: AUC, specificity at 100 % sensitivity, ROC PNG.

    Collects ``pred`` (slide probability) and ``label`` from the decollated engine output at every
    iteration; at ``EPOCH_COMPLETED`` (so that an ``MLFlowHandler`` attached after it logs them) computes
    :func:`~mixsup_monai.metrics.slide_classification_metrics`, puts
    them in ``engine.state.metrics`` as ``<prefix><name>`` (so an MLflow handler logs them), and writes
    ``<prefix>metrics.json`` and ``<prefix>roc.png`` in ``output_dir`` (rank 0).

    Args:
        output_dir: folder of the metrics file and ROC curve.
        prefix: prefix of the metric names and files (e.g. ``"test_"``).
        threshold: operating point of sensitivity / specificity / accuracy.
    """

    def __init__(self, output_dir: str, prefix: str = "test_", threshold: float = 0.5) -> None:
        self.output_dir = Path(output_dir)
        self.prefix = prefix
        self.threshold = float(threshold)
        self.probs: list[float] = []
        self.labels: list[int] = []
        self.metrics: dict[str, float] = {}

    def attach(self, engine: Any) -> None:
        if not engine.has_event_handler(self.started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.started)
        if not engine.has_event_handler(self.iteration_completed, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        if not engine.has_event_handler(self.epoch_completed, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def started(self, engine: Any) -> None:
        self.probs, self.labels = [], []

    def iteration_completed(self, engine: Any) -> None:
        outputs = _per_slide(engine.state.output)
        for out in outputs:
            if out.get("label") is None:
                raise ValueError("SlideMetricsSaver needs slide labels: every evaluated slide must have 'label' (0/1)")
            self.probs.append(_value(out["pred"]))
            self.labels.append(int(_value(out["label"])))

    def epoch_completed(self, engine: Any) -> None:
        self.metrics = slide_classification_metrics(self.labels, self.probs, self.threshold)
        engine.state.metrics.update({f"{self.prefix}{k}": v for k, v in self.metrics.items()})
        if not is_rank0():
            return
        write_json_atomic(self.output_dir / f"{self.prefix}metrics.json", self.metrics)
        if self.metrics["n_positive"] and self.metrics["n_negative"]:
            save_roc_png(self.labels, self.probs, self.output_dir / f"{self.prefix}roc.png", title=f"{self.prefix}ROC")
        logger.info(
            "%d slides: AUC %.4f, specificity at 100%% sensitivity %.4f (threshold %.4g)",
            len(self.labels),
            self.metrics["auc"],
            self.metrics["spec_at_100_sens"],
            self.metrics["threshold_at_100_sens"],
        )
