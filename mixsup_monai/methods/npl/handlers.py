"""NPL Ignite handlers: M-step early stopping, validation-loss scorer, weak-slide SAE, class-map and metric savers."""

from __future__ import annotations

import copy
import csv
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import look_up_option, min_version, optional_import

from mixsup_monai.handlers.round_selection import SelectionMode, is_improvement
from mixsup_monai.methods.npl.data import patch_labels, slide_name
from mixsup_monai.methods.npl.inferer import PAPER_COLOURS, SlideClassMapInferer
from mixsup_monai.methods.npl.selection import predicted_class_ratio, sum_absolute_error
from mixsup_monai.metrics.region import proportion_error, region_counts, region_metrics
from mixsup_monai.rounds.runner import RoundEvents
from mixsup_monai.utils.distributed import is_rank0
from mixsup_monai.visualize.overlay import label_overlay, save_png
from mixsup_monai.wsi.cache import get_slide
from mixsup_monai.wsi.labels import IGNORE_INDEX, read_label_map

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
torchvision, _ = optional_import("torchvision", descriptor="Please install torchvision before using the MobileNetV2.")

__all__ = ["MStepEarlyStopping", "EvaluatorScorer", "WeakSlideSAE", "SlideClassMapSaver", "RegionMetricsSaver"]

logger = logging.getLogger(__name__)


class MStepEarlyStopping:
    """Early stopping of every M-step on a validation metric, with the best epoch's weights restored.

    NPL trains "100 epochs with early stopping based on a validation loss plateau of 10 epochs" (paper,
    §5.2), first on the supervised patches, then after each pseudo-labelling step. Attached to the M-step
    trainer: after each epoch ``evaluator`` runs and ``metric`` is read from its ``state.metrics``; after
    ``patience`` epochs without improvement the trainer is terminated. Each call of ``trainer.run()`` (one
    M-step of the round runner) starts afresh; when it ends (stopped or not) the network gets the weights
    of its best epoch back (``restore_best``), so the round is scored and checkpointed with them.

    The trainer's ``state.metrics`` get ``epoch_<metric>`` after every epoch (logged per epoch by its
    MLflow / stats handlers; ``<metric>`` itself is the per-round value of the round logger) and
    ``best_<metric>`` / ``best_epoch`` at the end of the M-step.

    Args:
        evaluator: a MONAI ``SupervisedEvaluator`` over the validation patches.
        metric: key of ``evaluator.state.metrics`` (e.g. ``"val_loss"``).
        mode: ``"min"`` or ``"max"`` (:class:`~mixsup_monai.handlers.SelectionMode`; compared as round
            selection does, :func:`~mixsup_monai.handlers.round_selection.is_improvement`: NaN never improves).
        patience: epochs without improvement before stopping.
        min_delta: smallest change that counts as an improvement.
        restore_best: load the best epoch's weights at the end of the M-step.
        network: the network whose weights are kept (default: ``evaluator.network``).
    """

    def __init__(
        self,
        evaluator: Any,
        metric: str = "val_loss",
        mode: SelectionMode | str = SelectionMode.MIN,
        patience: int = 3,
        min_delta: float = 0.0,
        restore_best: bool = True,
        network: torch.nn.Module | None = None,
    ) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an int >= 1, got {patience!r}")
        self.evaluator = evaluator
        self.metric = metric
        self.mode = look_up_option(mode, SelectionMode)
        self.patience = patience
        self.min_delta = float(min_delta)
        self.restore_best = restore_best
        self.network = network
        self.history: list[dict] = []
        self._reset()

    def _reset(self) -> None:
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict | None = None
        self.since = 0

    @property
    def _net(self) -> torch.nn.Module:
        net = self.network if self.network is not None else self.evaluator.network
        return net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net

    def attach(self, engine: Any) -> None:
        for event, handler in (
            (Events.STARTED, self.started),
            (Events.EPOCH_COMPLETED, self.epoch_completed),
            (Events.COMPLETED, self.completed),
        ):
            if not engine.has_event_handler(handler, event):
                engine.add_event_handler(event, handler)

    def started(self, engine: Any) -> None:
        self._reset()

    def epoch_completed(self, engine: Any) -> None:
        self.evaluator.run()
        value = self.evaluator.state.metrics.get(self.metric)
        if value is None:
            raise KeyError(
                f"MStepEarlyStopping: the evaluator has no metric {self.metric!r}; it has "
                f"{sorted(self.evaluator.state.metrics)}"
            )
        value = float(value)
        better = is_improvement(value, self.best, self.mode, self.min_delta)
        self.history.append({"epoch": int(engine.state.epoch), self.metric: value})
        engine.state.metrics[f"epoch_{self.metric}"] = value  # per epoch; the round logger logs `metric`
        if better:
            self.best, self.best_epoch, self.since = value, int(engine.state.epoch), 0
            if self.restore_best:
                self.best_state = copy.deepcopy(self._net.state_dict())
        else:
            self.since += 1
        logger.info(
            "epoch %d: %s = %.4f (best %.4f at epoch %s)",
            engine.state.epoch,
            self.metric,
            value,
            self.best if self.best is not None else float("nan"),
            self.best_epoch,
        )
        if self.since >= self.patience:
            logger.info("no improvement of %s for %d epoch(s): the M-step stops", self.metric, self.patience)
            engine.terminate()

    def completed(self, engine: Any) -> None:
        if self.restore_best and self.best_state is not None and self.best_epoch != int(engine.state.epoch):
            self._net.load_state_dict(self.best_state)
            logger.info("restored the weights of epoch %d (%s = %.4f)", self.best_epoch, self.metric, self.best)
        engine.state.metrics[f"best_{self.metric}"] = self.best if self.best is not None else float("nan")
        engine.state.metrics["best_epoch"] = float(self.best_epoch or 0)
        self.best_state = None


class EvaluatorScorer:
    """Round scorer of :class:`~mixsup_monai.rounds.RoundRunner`: run an evaluator, return its metrics.

    NPL selects rounds on the validation loss: ``scorer(predictions, round_index)`` ignores the weak-slide
    predictions, runs ``evaluator`` (validation patches) with the round's network and returns every number
    of ``evaluator.state.metrics`` (e.g. ``val_loss``, ``val_miou``).
    """

    def __init__(self, evaluator: Any) -> None:
        self.evaluator = evaluator

    def __call__(self, predictions: Any = None, round_index: int = 0) -> dict[str, float]:
        self.evaluator.run()
        out = {}
        for k, v in self.evaluator.state.metrics.items():
            if torch.is_tensor(v) and v.numel() == 1:
                v = v.item()
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[str(k)] = float(v)
        return out


class WeakSlideSAE:
    """Per-round proportion error of the weak slides AFTER the round's training, into the round record.

    On every ``SLIDE_PREDICTED`` of a :class:`~mixsup_monai.rounds.RoundRunner` (the prediction pass at the
    end of round r, with round r's network), the slide's PCR over the proportion classes (arg-max over their
    columns) is compared with its proportions; on ``ROUND_SCORED`` the round record's metrics get
    ``weak/sae_mean`` and ``weak/sae/<slide>``. Together with the rule's ``pseudo/sae/<slide>`` (the SAE of
    the model that made the labels round r trained on, i.e. before round r) this is NPL's per-round
    "SAE per slide before / after".

    Args:
        classes: the network's class names.
        proportion_classes: the classes of the proportions.
        proportions_key: slide key of ``{class: fraction}``.
    """

    def __init__(
        self, classes: Sequence[str], proportion_classes: Sequence[str], proportions_key: str = "proportions"
    ) -> None:
        self.columns = [list(classes).index(c) for c in proportion_classes]
        self.proportion_classes = list(proportion_classes)
        self.proportions_key = proportions_key
        self.values: dict[str, float] = {}

    def attach(self, engine: Any) -> None:
        for event, handler in (
            (Events.EPOCH_STARTED, self.round_started),
            (RoundEvents.SLIDE_PREDICTED, self.slide_predicted),
            (RoundEvents.ROUND_SCORED, self.round_scored),
        ):
            if not engine.has_event_handler(handler, event):
                engine.add_event_handler(event, handler)

    def round_started(self, engine: Any) -> None:
        self.values = {}

    def slide_predicted(self, engine: Any) -> None:
        pred = engine.state.slide_prediction
        if pred is None or len(pred) == 0 or pred.outputs.ndim != 2:
            return
        props = pred.slide.get(self.proportions_key) if isinstance(pred.slide, Mapping) else None
        if not props:
            return
        pcr = predicted_class_ratio(pred.outputs.float()[:, self.columns])
        tcr = torch.tensor([float(props.get(c, 0.0)) for c in self.proportion_classes], dtype=torch.float64)
        self.values[slide_name(pred.slide)] = sum_absolute_error(tcr / max(float(tcr.sum()), 1e-12), pcr)

    def round_scored(self, engine: Any) -> None:
        if not self.values:
            return
        metrics = engine.state.round_record.setdefault("metrics", {})
        metrics["weak/sae_mean"] = sum(self.values.values()) / len(self.values)
        for name, value in sorted(self.values.items()):
            metrics[f"weak/sae/{name}"] = value


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
    known mask pixels (:func:`~mixsup_monai.methods.npl.patch_labels`; patches with less than ``min_known``
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
