"""NPL slide inference: patch classes -> class map, class fractions and proportions per slide."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer
from monai.utils import min_version, optional_import

from mixsup_monai.rounds.predict import SlidePatchPredictor

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
torchvision, _ = optional_import("torchvision", descriptor="Please install torchvision before using the MobileNetV2.")

__all__ = ["PAPER_COLOURS", "SlideClassMapInferer"]

logger = logging.getLogger(__name__)


#: overlay colours of the demo classes (paper, Fig. 5: lepidic red, acinar yellow, papillary green,
#: micropapillary cyan, solid blue); class 0 (non-cancer) stays untinted.
PAPER_COLOURS = ((0, 0, 0), (230, 25, 45), (240, 200, 0), (40, 170, 60), (0, 200, 220), (30, 70, 220))


class SlideClassMapInferer(Inferer):
    """Whole-slide inference of a patch classifier: class per tissue patch, class map, proportions.

    For each slide of the batch ``predictor`` runs the network (softmax) over every tissue patch; each patch
    gets its arg-max class. Kept in :attr:`results` (one dict per slide) for the savers:

    * ``class_map``: ``(h, w)`` uint8 map of the slide at ``map_downsample`` (value = class, 255 = no patch);
    * ``locations`` ``(N, 2)`` level 0, ``patch_size0``, ``predicted`` ``(N,)``, ``probs`` ``(N, C)``;
    * ``class_fractions``: share of the patches per class; ``proportions``: the proportion classes' shares
      among patches predicted as one of them (what a report's proportions mean), ``tumour_patches``.

    Returns ``(B, C)`` class fractions.

    Args:
        predictor: a :class:`~mixsup_monai.rounds.SlidePatchPredictor` with ``activation="softmax"``.
        class_names: the network's classes.
        proportion_classes: classes of the proportions (default: all but the first, e.g. subtypes without
            ``non-cancer``).
        map_max_size: long side of the class map in pixels.
    """

    def __init__(
        self,
        predictor: SlidePatchPredictor,
        class_names: Sequence[str],
        proportion_classes: Sequence[str] | None = None,
        map_max_size: int = 512,
    ) -> None:
        super().__init__()
        self.predictor = predictor
        self.class_names = [str(c) for c in class_names]
        self.proportion_classes = list(self.class_names[1:] if proportion_classes is None else proportion_classes)
        self.columns = [self.class_names.index(c) for c in self.proportion_classes]
        self.map_max_size = int(map_max_size)
        self.results: list[dict] = []

    def __call__(self, inputs: Sequence[Mapping], network: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.results = []
        fractions = []
        c = len(self.class_names)
        for pred in self.predictor.predict(list(inputs), network=network, description="slide"):
            w0, h0 = pred.slide_size
            ds = max(w0, h0) / self.map_max_size
            result: dict[str, Any] = {
                "slide": pred.slide,
                "image": pred.slide["image"],
                "slide_size": [int(w0), int(h0)],
                "map_downsample": float(ds),
                "patches": len(pred),
                "patch_size0": pred.patch_size0,
                "locations": pred.locations,
            }
            class_map = np.full((max(1, int(np.ceil(h0 / ds))), max(1, int(np.ceil(w0 / ds)))), 255, np.uint8)
            if len(pred) == 0:
                logger.warning("slide %r: no tissue patch; empty class map", pred.slide["image"])
                predicted = np.zeros(0, np.int64)
                probs = np.zeros((0, c), np.float32)
            else:
                probs = pred.outputs.float().numpy()
                if probs.ndim != 2 or probs.shape[1] != c:
                    raise ValueError(
                        f"slide {pred.slide['image']!r}: expected (N, {c}) class probabilities (activation='softmax'), "
                        f"got {probs.shape}"
                    )
                predicted = probs.argmax(axis=1)
                side = max(1, int(round(pred.patch_size0 / ds)))
                for (x, y), k in zip(pred.locations, predicted):
                    r0, c0 = int(round(y / ds)), int(round(x / ds))
                    class_map[r0 : r0 + side, c0 : c0 + side] = k
            counts = np.bincount(predicted, minlength=c).astype(np.float64)
            tumour = counts[self.columns]
            result.update(
                {
                    "predicted": predicted,
                    "probs": probs,
                    "class_map": class_map,
                    "class_fractions": {n: float(v / max(counts.sum(), 1)) for n, v in zip(self.class_names, counts)},
                    "tumour_patches": int(tumour.sum()),
                    "proportions": {
                        n: float(v / tumour.sum()) if tumour.sum() else 0.0
                        for n, v in zip(self.proportion_classes, tumour)
                    },
                }
            )
            fractions.append(counts / max(counts.sum(), 1))
            self.results.append(result)
        device = next(network.parameters()).device
        return torch.as_tensor(np.asarray(fractions, np.float32)).reshape(-1, c).to(device)
