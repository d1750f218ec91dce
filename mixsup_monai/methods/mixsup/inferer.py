"""MixSup slide inference: θ1 over every tissue patch -> heat map + top-K patches -> θ2 -> slide probability."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer

from mixsup_monai.methods.mixsup.stage2 import TopKSlideClassifier, read_top_k, top_k_indices
from mixsup_monai.rounds.predict import SlidePatchPredictor, stitch_patch_maps

__all__ = ["SlideTopKInferer"]

logger = logging.getLogger(__name__)


class SlideTopKInferer(Inferer):
    """Inferer for whole slides (a MONAI ``SupervisedEvaluator`` with :func:`~mixsup_monai.data.prepare_slide_batch`).

    For each slide of the batch: ``predictor`` runs θ1 (the evaluator's network) over every tissue patch;
    the patch probability maps are stitched into a heat map; the top ``K`` patches by maximum pixel
    probability are read and scored by θ2 (``classifier``); the slide probability is their mean. Returns
    ``(B, 1)`` probabilities; the per-slide details are kept in :attr:`results` for
    :class:`~mixsup_monai.methods.mixsup.SlideResultSaver` (heat-map PNG, top-K JSON).

    Args:
        predictor: the E-step predictor (patch size, level, tissue detection of the training run).
        classifier: the stage-2 :class:`~mixsup_monai.methods.mixsup.TopKSlideClassifier` (θ2 and ``K``).
        heatmap_max_size: long side of the stored heat map in pixels.
    """

    def __init__(
        self, predictor: SlidePatchPredictor, classifier: TopKSlideClassifier, heatmap_max_size: int = 512
    ) -> None:
        super().__init__()
        self.predictor = predictor
        self.classifier = classifier
        self.heatmap_max_size = int(heatmap_max_size)
        self.results: list[dict] = []

    def __call__(self, inputs: Sequence[Mapping], network: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        """
        Args:
            inputs: slide dicts (``image`` path, optional ``mpp``).
            network: θ1.

        Returns:
            ``(B, 1)`` slide probabilities.
        """
        self.results = []
        probs = []
        for pred in self.predictor.predict(list(inputs), network=network, description="slide"):
            path = pred.slide["image"]
            w0, h0 = pred.slide_size
            downsample = max(w0, h0) / self.heatmap_max_size
            result: dict[str, Any] = {
                "image": path,
                "slide_size": [int(w0), int(h0)],
                "heatmap_downsample": float(downsample),
                "heatmap": stitch_patch_maps(pred, downsample),
                "patches": len(pred),
            }
            if len(pred) == 0:
                logger.warning("slide %r: no tissue patch; probability 0", path)
                result.update({"probability": 0.0, "top_k": []})
            else:
                idx = top_k_indices(pred.scores, self.classifier.k)
                bag = read_top_k(pred, self.classifier.k, self.classifier.backends)
                slide_p, patch_p = self.classifier.probabilities(bag[None])
                result["probability"] = float(slide_p[0])
                top, seen = [], set()
                for rank, (i, p) in enumerate(zip(idx, patch_p[0].tolist())):
                    if i in seen:
                        continue
                    seen.add(i)
                    it = pred.items[i]
                    size0 = int(round(it["size"][0] * pred.downsample))
                    top.append(
                        {
                            "rank": rank + 1,
                            "x": int(it["location"][0]),
                            "y": int(it["location"][1]),
                            "width": size0,
                            "height": size0,
                            "level": int(it["level"]),
                            "patch_size": int(it["size"][0]),
                            "max_pixel_probability": float(pred.scores[i]),
                            "patch_probability": float(p),
                        }
                    )
                result["top_k"] = top
            probs.append(result["probability"])
            self.results.append(result)
        device = next(network.parameters()).device if any(True for _ in network.parameters()) else "cpu"
        return torch.tensor(np.asarray(probs, np.float32)).reshape(-1, 1).to(device)
