"""MixSup stage 2: a slide classifier on the top-K patches of each slide (slide probability = mean of K)."""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.transforms import Compose, Lambdad, RandFlipd, RandRotate90d
from monai.utils import set_determinism

from mixsup_monai.data.mixing_sampler import RatioBatchSampler
from mixsup_monai.data.patch_dataset import WSIPatchDataset
from mixsup_monai.handlers.sampler_epoch import SamplerEpochSetter
from mixsup_monai.methods.mixsup.data import slide_label_of
from mixsup_monai.metrics.slide import slide_classification_metrics
from mixsup_monai.rounds.predict import SlidePatchPredictor, SlidePrediction
from mixsup_monai.utils.distributed import barrier, is_rank0
from mixsup_monai.utils.seeds import round_seed
from mixsup_monai.wsi.reader import DEFAULT_BACKENDS

__all__ = ["TopKMeanClassifier", "TopKSlideClassifier", "top_k_indices", "read_top_k", "balanced_bce"]

logger = logging.getLogger(__name__)

_EPS = 1e-6


def top_k_indices(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` highest scores (ties by patch order); fewer patches than ``k`` are cycled to ``k``."""
    n = int(scores.numel())
    if n == 0:
        return []
    order = torch.argsort(scores.float().reshape(-1), descending=True, stable=True).tolist()
    return [order[i % n] for i in range(k)] if n < k else order[:k]


def read_top_k(pred: SlidePrediction, k: int, backends: Sequence[str] = DEFAULT_BACKENDS) -> torch.Tensor:
    """The slide's top-``k`` patches (by ``pred.scores``) as a ``(k * 3, p, p)`` uint8 tensor (one batched read)."""
    idx = top_k_indices(pred.scores, k)
    dataset = WSIPatchDataset([pred.items[i] for i in idx], backends=backends)
    try:
        patches = dataset.__getitems__(list(range(len(idx))))
    finally:
        dataset.close()
    stack = torch.stack([p["image"] for p in patches])  # (k, 3, p, p) uint8
    return stack.reshape(-1, *stack.shape[-2:])


def balanced_bce(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Slide BCE averaged per class then over classes (positive and negative slides weigh equally)."""
    p = probs.double().reshape(-1).clamp(_EPS, 1 - _EPS)
    y = labels.double().reshape(-1)
    losses = -(y * p.log() + (1 - y) * (1 - p).log())
    parts = [losses[y == c].mean() for c in (0.0, 1.0) if bool((y == c).any())]
    return float(torch.stack(parts).mean())


def _to_unit_float(patches: torch.Tensor) -> torch.Tensor:
    """uint8 patches 0-255 as float32 in [0, 1]."""
    return patches.float().div(255.0)


class TopKMeanClassifier(torch.nn.Module):
    """Slide probability = mean over the K patches of ``sigmoid(network(patch))`` (Li et al., stage 2).

    Args:
        network: patch classifier, ``(N, 3, H, W) -> (N, 1)`` logits.

    Shapes:
        input ``(B, K * 3, H, W)`` (K patches stacked on the channel axis, so that MONAI's 2D dictionary
        transforms augment all patches of a slide alike) or ``(B, K, 3, H, W)``; output ``(B, 1)``
        probabilities.
    """

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` logits of every patch."""
        if x.ndim == 4:
            b, kc, h, w = x.shape
            if kc % 3:
                raise ValueError(f"expected K * 3 channels (RGB patches stacked), got {kc}")
            x = x.reshape(b, kc // 3, 3, h, w)
        if x.ndim != 5:
            raise ValueError(f"expected (B, K*3, H, W) or (B, K, 3, H, W), got {tuple(x.shape)}")
        b, k = x.shape[:2]
        return self.network(x.reshape(b * k, *x.shape[2:])).reshape(b, k, -1)[..., 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.patch_logits(x)).mean(dim=1, keepdim=True)


class TopKSlideClassifier:
    """MixSup stage 2, trained from scratch after every round; its training loss is the round's score.

    Per slide, the ``k`` patches with the highest maximum pixel probability of θ1 (the prediction pass's
    ``scores``) are read once; θ2 (``network``, a MONAI classifier) scores each, the slide probability is
    their mean (:class:`TopKMeanClassifier`) and a MONAI ``SupervisedTrainer`` with ``optimizer`` minimises
    the slide BCE with positive and negative slides drawn equally in every batch (a 1 : 1
    :class:`~mixsup_monai.data.RatioBatchSampler`). θ2 and its optimizer start from the same state every
    round (weights re-initialised from ``seed``, optimizer back to its state when given, e.g. no Adam
    moments), so rounds differ only by the patches θ1 selects.

    Returned metrics (``scorer(predictions, round_index)``):

    * ``stage2_loss`` -- the paper's round-selection criterion: slide BCE of the trained θ2 over all
      training slides (evaluation mode, positives and negatives weighted equally);
    * ``stage2_epoch_loss`` -- mean loss of the last training epoch; ``train_auc``;
    * with ``validation_slides`` (and a ``predictor`` running θ1): ``val_loss``, ``val_auc``,
      ``val_spec_at_100_sens`` -- select on these with ``RoundSelection(metric="val_loss")``.

    Args:
        network: θ2, ``(N, 3, p, p) -> (N, 1)`` logits (e.g. ``monai.networks.nets.Classifier``).
        k: patches per slide (paper: 16).
        epochs: training epochs per round (paper: 15).
        batch_size: slides per batch (half positive, half negative).
        optimizer: a ``torch.optim.Optimizer`` over ``network.parameters()`` (in a bundle config:
            ``{"_target_": "torch.optim.Adam", "params": "$@rounds#stage2#network.parameters()", "lr": ...}``);
            its state when given is restored before every round. Default: ``torch.optim.Adam`` with
            PyTorch's defaults (``lr=1e-3``).
        device: where θ2 trains.
        seed: seed of θ2's initial weights and of the training draws (combined with the round).
        label_key: slide key of the 0/1 label.
        predictor: runs θ1 over validation / test slides (needed for ``validation_slides`` and :meth:`classify`).
        validation_slides: datalist entries scored after each round (optional).
        shared_dir: under ``torchrun``, where the ranks put their share of the validation slides' θ1 predictions
            (:meth:`~mixsup_monai.rounds.SlidePatchPredictor.predict_across_ranks`; on several nodes a shared file
            system, like the checkpoints): each rank predicts ``1 / world`` of them. ``None``: every rank predicts
            every validation slide.
        augment: random flips / 90° rotations of the K patches.
        backends: slide reader order.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        k: int = 16,
        epochs: int = 15,
        batch_size: int = 4,
        optimizer: torch.optim.Optimizer | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        label_key: str = "label",
        predictor: SlidePatchPredictor | None = None,
        validation_slides: Sequence[Mapping] | None = None,
        shared_dir: str | os.PathLike | None = None,
        augment: bool = True,
        backends: Sequence[str] = DEFAULT_BACKENDS,
    ) -> None:
        for name, value in (("k", k), ("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if batch_size < 2:
            raise ValueError("batch_size must be >= 2 (one positive and one negative slide per batch)")
        if optimizer is None:
            optimizer = torch.optim.Adam(network.parameters())
        own = {id(p) for p in network.parameters()}
        if not all(id(p) in own for group in optimizer.param_groups for p in group["params"]):
            # e.g. built on θ1's parameters: θ2 would not learn and θ1 would be changed behind the runner's back
            raise ValueError("optimizer must be built on the stage-2 network's parameters (network.parameters())")
        self.device = torch.device(device)
        self.model = TopKMeanClassifier(network).to(self.device)
        self.network = network
        self.k = k
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        # Every round trains from scratch: the optimizer goes back to this state (no moments, first lr).
        self._initial_optimizer_state = copy.deepcopy(optimizer.state_dict())
        self.seed = int(seed)
        self.label_key = label_key
        self.predictor = predictor
        self.validation_slides = [dict(s) for s in validation_slides] if validation_slides else []
        self.shared_dir = None if shared_dir is None else Path(shared_dir)
        self.augment = augment
        self.backends = tuple(backends)
        self.history: list[dict] = []

    # ------------------------------------------------------------------ state (checkpointed per round)
    def state_dict(self) -> dict:
        """θ2's weights (the ``classifier`` entry of a round checkpoint and of the exported ``model.pt``).

        The optimizer's state is not part of it: every round restarts it (:meth:`reset`), so a resumed run
        needs only θ2's weights, and ``model.pt`` stays loadable straight into the bare network.
        """
        return self.network.state_dict()

    def load_state_dict(self, state: Mapping) -> None:
        self.network.load_state_dict(state)

    def reset(self) -> None:
        """Re-initialise θ2 deterministically from ``seed`` and the optimizer to its initial state (every round)."""
        self.optimizer.load_state_dict(self._initial_optimizer_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for module in self.network.modules():
                if module is not self.network and hasattr(module, "reset_parameters"):
                    module.reset_parameters()

    # ------------------------------------------------------------------ data
    def bags(self, predictions: Iterable[SlidePrediction]) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
        """Read the top-K patches of each slide: ``(slides, bags (S, K*3, p, p) uint8, labels (S,))``."""
        slides, bags, labels = [], [], []
        for pred in predictions:
            if len(pred) == 0:
                logger.warning("slide %r has no tissue patch; stage 2 skips it", pred.slide.get("image"))
                continue
            slides.append(pred.slide)
            bags.append(read_top_k(pred, self.k, self.backends))
            labels.append(slide_label_of(pred.slide, self.label_key) if self.label_key in pred.slide else -1)
        if not bags:
            raise ValueError("stage 2: no slide with tissue patches to classify")
        return slides, torch.stack(bags), torch.tensor(labels, dtype=torch.float32)

    # ------------------------------------------------------------------ training and scoring
    def probabilities(self, bags: torch.Tensor, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """Slide probabilities ``(S,)`` and patch probabilities ``(S, K)`` of θ2 (evaluation mode)."""
        self.model.eval()
        slide_p, patch_p = [], []
        with torch.no_grad():
            for i in range(0, len(bags), batch_size):
                x = bags[i : i + batch_size].to(self.device).float().div_(255.0)
                p = torch.sigmoid(self.model.patch_logits(x)).cpu()
                patch_p.append(p)
                slide_p.append(p.mean(dim=1))
        return torch.cat(slide_p), torch.cat(patch_p)

    def fit(self, bags: torch.Tensor, labels: torch.Tensor, round_index: int = 0) -> dict[str, float]:
        """Train θ2 from its initial weights on ``bags`` with balanced batches; returns the last epoch's loss."""
        y = labels.long()
        neg, pos = torch.nonzero(y == 0).reshape(-1).tolist(), torch.nonzero(y == 1).reshape(-1).tolist()
        if not neg or not pos:
            raise ValueError(
                f"stage 2 needs positive and negative training slides, got {len(pos)} positive and {len(neg)} negative"
            )
        seed = round_seed(self.seed, round_index)
        set_determinism(seed=seed)
        self.reset()
        # uint8 until a slide is drawn: float copies of every slide's K patches would be 4x the bags' memory
        data = [{"image": bags[i], "label": labels[i : i + 1].clone()} for i in range(len(bags))]
        steps = [Lambdad(keys="image", func=_to_unit_float)]
        if self.augment:
            steps += [
                RandFlipd(keys="image", prob=0.5, spatial_axis=0),
                RandFlipd(keys="image", prob=0.5, spatial_axis=1),
                RandRotate90d(keys="image", prob=0.5),
            ]
        transform = Compose(steps)
        dataset = Dataset(data, transform=transform)
        sampler = RatioBatchSampler(
            [neg, pos],
            ratio=(1, 1),
            batch_size=self.batch_size,
            num_batches=max(1, math.ceil(len(data) / self.batch_size)),
            seed=seed,
            pool_names=["negative slides", "positive slides"],
            num_replicas=1,
            rank=0,
        )
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=0)
        from ignite.metrics import Average

        trainer = SupervisedTrainer(
            device=self.device,
            max_epochs=self.epochs,
            train_data_loader=loader,
            network=self.model,
            optimizer=self.optimizer,
            loss_function=torch.nn.BCELoss(),
            key_train_metric={"stage2_epoch_loss": Average(output_transform=lambda out: out[0]["loss"])},
            train_handlers=[SamplerEpochSetter(sampler)],
            amp=False,
        )
        trainer.logger.setLevel(logging.WARNING)
        trainer.run()
        return {"stage2_epoch_loss": float(trainer.state.metrics.get("stage2_epoch_loss", float("nan")))}

    def score_slides(
        self, slides: Sequence[Mapping], description: str = "validation", round_index: int = 0
    ) -> dict[str, float]:
        """θ1 (``predictor``) + θ2 over ``slides``: balanced loss, AUC and specificity at 100 % sensitivity.

        Under ``torchrun`` with ``shared_dir`` the slides' θ1 predictions are split across the ranks (every rank
        then scores all of them, with the same θ2: the same metrics as one process).
        """
        if self.predictor is None:
            raise ValueError("TopKSlideClassifier: scoring new slides needs predictor= (θ1 over their patches)")
        if self.shared_dir is None:
            preds = list(self.predictor.predict(slides, description=description))
        else:
            folder = self.shared_dir / f"validation_{round_index:02d}"
            preds = list(self.predictor.predict_across_ranks(slides, folder, description=description))
        _, bags, labels = self.bags(preds)
        del preds  # memory-mapped from the shared folder under torchrun
        if self.shared_dir is not None:
            barrier()  # every rank has read its bags before rank 0 removes the folder
            if is_rank0():
                shutil.rmtree(self.shared_dir / f"validation_{round_index:02d}", ignore_errors=True)
        probs, _ = self.probabilities(bags)
        metrics = slide_classification_metrics(labels.long().numpy(), probs.numpy())
        return {
            "loss": balanced_bce(probs, labels),
            "auc": metrics["auc"],
            "spec_at_100_sens": metrics["spec_at_100_sens"],
        }

    def __call__(self, predictions: Iterable[SlidePrediction], round_index: int = 0) -> dict[str, float]:
        """Train θ2 on the top-K patches of ``predictions`` and score the round (see the class docstring)."""
        _, bags, labels = self.bags(predictions)
        if bool((labels < 0).any()):
            raise ValueError(f"stage 2: every training slide needs the key {self.label_key!r} (0 or 1)")
        out = self.fit(bags, labels, round_index)
        probs, _ = self.probabilities(bags)
        out["stage2_loss"] = balanced_bce(probs, labels)
        out["train_auc"] = slide_classification_metrics(labels.long().numpy(), probs.numpy())["auc"]
        if self.validation_slides and self.predictor is not None:
            description = f"round {round_index} validation"
            val = self.score_slides(self.validation_slides, description=description, round_index=round_index)
            out.update({f"val_{k}": v for k, v in val.items()})
        self.history.append({"round": round_index, **out})
        return out

    def __repr__(self) -> str:
        return (
            f"TopKSlideClassifier(k={self.k}, epochs={self.epochs}, batch_size={self.batch_size}, "
            f"optimizer={type(self.optimizer).__name__})"
        )

    def to(self, device: Any) -> TopKSlideClassifier:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self
