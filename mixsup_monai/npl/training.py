"""NPL training glue: the patch classifier, M-step early stopping, the validation-loss scorer, weak-slide SAE."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.utils import min_version, optional_import

from mixsup_monai.npl.data import slide_name
from mixsup_monai.rounds.runner import RoundEvents
from mixsup_monai.selection import predicted_class_ratio, sum_absolute_error

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
torchvision, _ = optional_import("torchvision", descriptor="Please install torchvision before using the MobileNetV2.")

__all__ = ["PatchClassifier", "mobilenet_v2_classifier", "MStepEarlyStopping", "EvaluatorScorer", "WeakSlideSAE"]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PatchClassifier(torch.nn.Module):
    """A torchvision classifier on ``(B, 3, H, W)`` images in [0, 1], normalised with the ImageNet statistics.

    With ``freeze_features`` the convolutional part (``backbone.features``) is frozen: no gradients and
    batch-norm statistics kept (evaluation mode even while training), as in the paper's fine-tuning.
    """

    def __init__(self, backbone: torch.nn.Module, freeze_features: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.freeze_features = bool(freeze_features)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if self.freeze_features:
            features = getattr(backbone, "features", None)
            if features is None:
                raise ValueError(f"freeze_features needs a backbone with .features, got {type(backbone).__name__}")
            for p in features.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> PatchClassifier:
        super().train(mode)
        if self.freeze_features:
            self.backbone.features.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)


def mobilenet_v2_classifier(
    num_classes: int,
    weights: str | None = None,
    weights_path: str | None = None,
    freeze_features: bool = False,
    width_mult: float = 1.0,
    dropout: float = 0.2,
) -> PatchClassifier:
    """The paper's patch classifier: torchvision MobileNetV2 with a ``num_classes`` head.

    Default: random initialisation (``weights=None``; nothing is downloaded). The paper fine-tuned
    ImageNet weights with the convolutional layers frozen; with weights available, pass
    ``weights="IMAGENET1K_V1"`` (torchvision downloads them once into its cache) or ``weights_path`` (a
    ``state_dict`` file of ``torchvision.models.mobilenet_v2``) together with ``freeze_features=True``.

    Args:
        num_classes: C (datalist ``classes``).
        weights: a torchvision weights name, e.g. ``"IMAGENET1K_V1"``.
        weights_path: local ``.pth`` state dict of an ImageNet MobileNetV2 (its 1000-class head is dropped).
        freeze_features: freeze the convolutional layers.
        width_mult: MobileNetV2 width multiplier (pretrained weights exist for 1.0 only).
        dropout: dropout before the head.
    """
    if weights is not None and weights_path is not None:
        raise ValueError("pass weights (torchvision name) or weights_path (local file), not both")
    pretrained = weights is not None or weights_path is not None
    if pretrained and width_mult != 1.0:
        raise ValueError(f"ImageNet MobileNetV2 weights exist for width_mult=1.0, got {width_mult}")
    net = torchvision.models.mobilenet_v2(weights=weights, width_mult=width_mult, dropout=dropout)
    if weights_path is not None:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    net.classifier[-1] = torch.nn.Linear(net.last_channel, int(num_classes))
    if freeze_features and not pretrained:
        logger.warning("freeze_features=True with random weights: only the head will learn")
    return PatchClassifier(net, freeze_features=freeze_features)


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
        mode: ``"min"`` or ``"max"``.
        patience: epochs without improvement before stopping.
        min_delta: smallest change that counts as an improvement.
        restore_best: load the best epoch's weights at the end of the M-step.
        network: the network whose weights are kept (default: ``evaluator.network``).
    """

    def __init__(
        self,
        evaluator: Any,
        metric: str = "val_loss",
        mode: str = "min",
        patience: int = 3,
        min_delta: float = 0.0,
        restore_best: bool = True,
        network: torch.nn.Module | None = None,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an int >= 1, got {patience!r}")
        self.evaluator = evaluator
        self.metric = metric
        self.mode = mode
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
        better = math.isfinite(value) and (
            self.best is None
            or (value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta)
        )
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
