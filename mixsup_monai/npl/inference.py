"""NPL slide inference and evaluation: patch classes -> class map, overlay, proportions; OP / PC / mIoU, SAE."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer
from monai.utils import min_version, optional_import

from mixsup_monai.data.datalist import IGNORE_INDEX, read_label_map
from mixsup_monai.metrics.region import proportion_error, region_counts, region_metrics
from mixsup_monai.npl.data import patch_labels, slide_name
from mixsup_monai.rounds.predict import SlidePatchPredictor
from mixsup_monai.rounds.store import is_rank0
from mixsup_monai.visualize import label_overlay, save_png
from mixsup_monai.wsi.cache import get_slide

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = [
    "PAPER_COLOURS",
    "collate_slides",
    "prepare_slide_list",
    "SlideClassMapInferer",
    "SlideClassMapSaver",
    "RegionMetricsSaver",
]

logger = logging.getLogger(__name__)

#: overlay colours of the demo classes (paper, Fig. 5: lepidic red, acinar yellow, papillary green,
#: micropapillary cyan, solid blue); class 0 (non-cancer) stays untinted.
PAPER_COLOURS = ((0, 0, 0), (230, 25, 45), (240, 200, 0), (40, 170, 60), (0, 200, 220), (30, 70, 220))

#: slide keys kept for the evaluator (truth for the metrics, proportions for the SAE).
SLIDE_KEYS = ("image", "mpp", "tissue_mask", "known_region", "mask", "mask_level", "proportions")


def collate_slides(batch: Sequence[Mapping]) -> list[dict]:
    """``collate_fn`` of a slide-level DataLoader: the slide dicts as a list (no tensors)."""
    return [{k: v for k, v in dict(s).items() if k in SLIDE_KEYS} for s in batch]


def prepare_slide_list(
    batchdata: Sequence[Mapping] | Mapping, device: Any = None, non_blocking: bool = False, **kwargs: Any
) -> tuple[list[dict], None]:
    """``prepare_batch`` of a MONAI evaluator over slides collated by :func:`collate_slides`: ``(slides, None)``."""
    if isinstance(batchdata, Mapping):
        batchdata = [batchdata]
    return [dict(s) for s in batchdata], None


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


class SlideClassMapSaver:
    """Write the inferer's slide results: class map, colour overlay and predicted proportions.

    Per slide (``<stem>`` = slide file stem), into ``output_dir``:

    * ``<stem>_classes.png``: uint8 class map (value = class index, 255 = no tissue patch);
    * ``<stem>_overlay.png``: the slide thumbnail tinted by class (``colours``; the first class untinted);
    * ``<stem>_proportions.json``: predicted proportions of the proportion classes, class fractions, patch
      counts and the class names / colours of the map.

    Args:
        inferer: the :class:`SlideClassMapInferer` whose :attr:`~SlideClassMapInferer.results` are saved.
        output_dir: folder of the files (created).
        colours: RGB per class index.
    """

    def __init__(
        self, inferer: SlideClassMapInferer, output_dir: str, colours: Sequence[Sequence[int]] = PAPER_COLOURS
    ) -> None:
        self.inferer = inferer
        self.output_dir = Path(output_dir)
        self.colours = [tuple(int(v) for v in c) for c in colours]
        self.saved: list[Path] = []

    def attach(self, engine: Any) -> None:
        if not engine.has_event_handler(self.iteration_completed, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)

    def iteration_completed(self, engine: Any) -> None:
        if not is_rank0():
            return
        for result in self.inferer.results:
            self.save(result)

    def save(self, result: Mapping) -> Path:
        stem = slide_name(str(result["image"]))
        class_map = result["class_map"]
        wsi = get_slide(str(result["image"]), result["slide"].get("mpp"))
        w0, h0 = result["slide_size"]
        ds = result["map_downsample"]
        thumb = wsi.read_scaled(location=(0, 0), size=(w0, h0), out_size=(class_map.shape[1], class_map.shape[0]))
        save_png(class_map, self.output_dir / f"{stem}_classes.png")
        save_png(label_overlay(thumb, class_map, colours=self.colours), self.output_dir / f"{stem}_overlay.png")
        info = {
            "image": str(result["image"]),
            "proportions": result["proportions"],
            "class_fractions": result["class_fractions"],
            "patches": int(result["patches"]),
            "tumour_patches": int(result["tumour_patches"]),
            "classes": self.inferer.class_names,
            "proportion_classes": self.inferer.proportion_classes,
            "colours": {n: list(self.colours[i % len(self.colours)]) for i, n in enumerate(self.inferer.class_names)},
            "class_map": f"{stem}_classes.png",
            "class_map_downsample": ds,
            "patch_size_level0": int(result["patch_size0"]),
        }
        path = self.output_dir / f"{stem}_proportions.json"
        path.write_text(json.dumps(info, indent=2) + "\n")
        self.saved.append(path)
        return path


class RegionMetricsSaver:
    """Region metrics of an evaluation over slides with a full ``mask``: OP, PC, mIoU and per-slide SAE.

    Per slide of the inferer's results: the true class of each predicted patch is the majority of its
    known mask pixels (:func:`~mixsup_monai.npl.patch_labels`; patches with less than ``min_known``
    known pixels, the annotators' "unknown" / glass, are excluded); TP / FP / FN are summed over slides
    and turned into OP, PC, mIoU (Tokunaga et al., Eq. 7; :func:`~mixsup_monai.metrics.region_metrics`).
    Per slide also the proportion error SAE of the predicted proportions (patches predicted as a
    proportion class) against the slide's ``proportions`` (else the mask's patch counts), and
    ``sae_given_tumour`` (patches whose truth is a proportion class, arg-max over those classes: the subtype
    error alone, as NPL sees the weak slides).

    At the end of the epoch ``engine.state.metrics`` gets ``op``, ``pc``, ``miou``, ``sae_mean`` (attach
    before an ``MLFlowHandler``/``StatsHandler`` that should log them), and ``output_dir`` gets
    ``<prefix>metrics.json`` (totals, per class, per slide) and ``<prefix>per_slide.csv``.

    Args:
        inferer: the :class:`SlideClassMapInferer`.
        output_dir: folder of the files.
        min_known: known share of a patch for it to be scored.
        prefix: file name prefix (e.g. ``"test_"``).
    """

    def __init__(self, inferer: SlideClassMapInferer, output_dir: str, min_known: float = 0.5, prefix: str = ""):
        self.inferer = inferer
        self.output_dir = Path(output_dir)
        self.min_known = float(min_known)
        self.prefix = prefix
        self.rows: list[dict] = []
        self.counts = np.zeros((3, len(inferer.class_names)), np.int64)
        self.results: dict[str, Any] = {}

    def attach(self, engine: Any) -> None:
        for event, handler in (
            (Events.EPOCH_STARTED, self.epoch_started),
            (Events.ITERATION_COMPLETED, self.iteration_completed),
            (Events.EPOCH_COMPLETED, self.epoch_completed),
        ):
            if not engine.has_event_handler(handler, event):
                engine.add_event_handler(event, handler)

    def epoch_started(self, engine: Any) -> None:
        self.rows = []
        self.counts = np.zeros((3, len(self.inferer.class_names)), np.int64)

    def score(self, result: Mapping) -> dict[str, Any]:
        """Counts and errors of one slide result (needs ``mask`` and ``mask_level`` in its slide)."""
        slide = result["slide"]
        names, cols = self.inferer.class_names, self.inferer.columns
        if not slide.get("mask"):
            raise ValueError(f"slide {slide['image']!r}: evaluation needs its pixel truth 'mask' (+ 'mask_level')")
        wsi = get_slide(str(slide["image"]), slide.get("mpp"))
        ds = float(wsi.info.level_downsamples[int(slide["mask_level"])])
        label_map = read_label_map(slide["mask"])
        size0 = int(result["patch_size0"] or 1)
        truth = patch_labels(label_map, ds, result["locations"], size0, len(names), self.min_known)
        counts = region_counts(result["predicted"], truth, len(names))
        true_props = slide.get("proportions")
        if not true_props:
            t = np.bincount(truth[np.isin(truth, cols)], minlength=len(names))[cols]
            true_props = {n: float(v) for n, v in zip(self.inferer.proportion_classes, t)}
        in_tumour = np.isin(truth, cols)
        given = {}
        if in_tumour.any():
            sub = result["probs"][in_tumour][:, cols].argmax(axis=1)
            given = dict(zip(self.inferer.proportion_classes, np.bincount(sub, minlength=len(cols)).tolist()))
        row = {
            "slide": slide_name(slide),
            "patches": int(result["patches"]),
            "scored_patches": int((truth != IGNORE_INDEX).sum()),
            "accuracy": float(counts[0].sum() / max((truth != IGNORE_INDEX).sum(), 1)),
            "sae": proportion_error(result["proportions"], true_props) if result["tumour_patches"] else 1.0,
            "sae_given_tumour": proportion_error(given, true_props) if given else float("nan"),
        }
        for n, v in result["proportions"].items():
            row[f"pred/{n}"] = round(float(v), 4)
        total = sum(float(v) for v in true_props.values()) or 1.0
        for n in self.inferer.proportion_classes:
            row[f"true/{n}"] = round(float(true_props.get(n, 0.0)) / total, 4)
        return {"row": row, "counts": counts}

    def iteration_completed(self, engine: Any) -> None:
        for result in self.inferer.results:
            scored = self.score(result)
            self.rows.append(scored["row"])
            self.counts += scored["counts"]

    def epoch_completed(self, engine: Any) -> None:
        metrics = region_metrics(self.counts, self.inferer.class_names)
        sae = [r["sae"] for r in self.rows]
        given = [r["sae_given_tumour"] for r in self.rows if np.isfinite(r["sae_given_tumour"])]
        self.results = {
            **metrics,
            "sae_mean": float(np.mean(sae)) if sae else float("nan"),
            "sae_given_tumour_mean": float(np.mean(given)) if given else float("nan"),
            "slides": len(self.rows),
            "counts": {k: v.tolist() for k, v in zip(("tp", "fp", "fn"), self.counts)},
            "classes": self.inferer.class_names,
            "per_slide": self.rows,
        }
        for key in ("op", "pc", "miou", "sae_mean", "sae_given_tumour_mean"):
            engine.state.metrics[key] = self.results[key]
        if not is_rank0():
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / f"{self.prefix}metrics.json").write_text(json.dumps(self.results, indent=2) + "\n")
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        with open(self.output_dir / f"{self.prefix}per_slide.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        logger.info(
            "%d slides: OP %.4f  PC %.4f  mIoU %.4f  SAE %.4f",
            len(self.rows),
            self.results["op"],
            self.results["pc"],
            self.results["miou"],
            self.results["sae_mean"],
        )
