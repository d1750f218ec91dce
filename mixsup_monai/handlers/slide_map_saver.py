"""Ignite handler saving each slide's predicted probability map and a heat-map overlay PNG."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from monai.utils import min_version, optional_import

from mixsup_monai.visualize.overlay import heatmap_overlay, label_overlay, save_png

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["SlideMapSaver"]

logger = logging.getLogger(__name__)


class SlideMapSaver:
    """Save, per slide of an evaluator's batch, ``<name>_prob.png``, ``<name>_classes.png`` and overlays.

    Expects the engine output after MONAI's decollation: a list of dicts holding ``pred_key`` =
    ``(C, H, W)`` class probabilities and ``image_key`` = ``(3, H, W)`` image in [0, 1] on the same grid,
    and the batch's ``slide_path`` (from :class:`~mixsup_monai.transforms.LoadSlided`) names the files.
    Under DDP every rank writes the slides it evaluated.

    Args:
        output_dir: folder of the PNGs (an MLflow handler can log it as artifacts).
        class_index: the class whose probability is the heat map (e.g. 1 = tumour).
        pred_key: key of the probabilities in the engine output.
        image_key: key of the image in the engine output.
    """

    def __init__(self, output_dir: str, class_index: int = 1, pred_key: str = "pred", image_key: str = "image"):
        self.output_dir = Path(output_dir)
        self.class_index = class_index
        self.pred_key = pred_key
        self.image_key = image_key
        self.saved: list[Path] = []

    def attach(self, engine) -> None:
        if not engine.has_event_handler(self.iteration_completed, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)

    def iteration_completed(self, engine) -> None:
        outputs = engine.state.output
        outputs = outputs if isinstance(outputs, list) else [outputs]
        # the decollated output holds image / label / pred only; the slide's path stays in the batch
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [{}] * len(outputs)
        for item, source in zip(outputs, batch):
            self.save({**item, "slide_path": source.get("slide_path", item.get("slide_path"))})

    def save(self, item: dict) -> None:
        probs = item[self.pred_key]
        probs = probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
        image = item[self.image_key]
        image = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        name = Path(str(item.get("slide_path", f"slide_{len(self.saved)}"))).stem
        prob = probs[self.class_index]
        classes = probs.argmax(0).astype(np.uint8)
        self.saved += [
            save_png((np.clip(prob, 0, 1) * 255).astype(np.uint8), self.output_dir / f"{name}_prob.png"),
            save_png(classes, self.output_dir / f"{name}_classes.png"),
            save_png(heatmap_overlay(image, prob), self.output_dir / f"{name}_heatmap.png"),
            save_png(label_overlay(image, classes), self.output_dir / f"{name}_overlay.png"),
        ]
        logger.info("saved probability map and overlays of %s to %s", name, self.output_dir)
