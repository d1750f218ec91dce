"""Round runner: round r = M-step on the round's pools -> predict every patch -> score -> next pseudo labels."""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data.utils import set_rnd
from monai.utils import min_version, optional_import, set_determinism

from mixsup_monai.rounds.pools import PoolDataset
from mixsup_monai.rounds.predict import SlidePatchPredictor, SlidePrediction
from mixsup_monai.rounds.state import STATE_FILE, RoundCheckpoints
from mixsup_monai.rounds.store import PseudoLabelSet, PseudoLabelStore
from mixsup_monai.utils.distributed import barrier, is_rank0
from mixsup_monai.utils.errors import InputNotFoundError
from mixsup_monai.utils.seeds import round_seed

Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")
Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
EventEnum, _ = optional_import("ignite.engine", "0.4.11", min_version, "EventEnum")

__all__ = ["RoundEvents", "RoundRunner", "STATE_FILE"]

logger = logging.getLogger(__name__)

#: A rule turns the predictions of one pass over the slides into the pseudo labels of the next round:
#: ``rule(predictions, round_index=r, previous=labels of round r-1 or None) -> PseudoLabelSet``.
#: ``rule(predictions, round_index=, previous=[, labels=]) -> PseudoLabelSet``; given ``labels`` (the store's set
#: of the round, which writes each slide's arrays to disk at once), a rule fills and returns it.
Rule = Callable[..., PseudoLabelSet]


def _accepts_labels(rule: Rule) -> bool:
    try:
        parameters = inspect.signature(rule).parameters
    except (TypeError, ValueError):  # a callable without a signature: call it the old way
        return False
    return "labels" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


class RoundEvents(EventEnum):
    """Events a :class:`RoundRunner` fires inside a round (between ``EPOCH_STARTED`` / ``EPOCH_COMPLETED``).

    * ``PSEUDO_LABELS_LOADED`` -- the round's pseudo labels are in the pools (``state.pseudo_labels``);
    * ``MSTEP_COMPLETED`` -- the M-step trainer finished the round's epochs;
    * ``SLIDE_PREDICTED`` -- one slide of the prediction pass is done (``state.slide_prediction``);
    * ``PSEUDO_LABELS_MADE`` -- the next round's labels are in the store (``state.next_pseudo_labels``);
    * ``ROUND_SCORED`` -- ``state.round_record`` holds the round's metrics (before the checkpoint).
    """

    PSEUDO_LABELS_LOADED = "pseudo_labels_loaded"
    MSTEP_COMPLETED = "mstep_completed"
    SLIDE_PREDICTED = "slide_predicted"
    PSEUDO_LABELS_MADE = "pseudo_labels_made"
    ROUND_SCORED = "round_scored"


def _detach_checkpoint_loaders(trainer: Any) -> list:
    """Remove the ``CheckpointLoader`` handlers of the trainer and return them.

    A ``CheckpointLoader`` in ``train#handlers`` (MONAI Label's ``pretrained`` adds one, loading
    ``models/model.pt``) fires on every ``trainer.run()`` -- every M-step -- and would put the starting weights
    back at each round; the runner applies them once, before round 0 of a fresh run.
    """
    from monai.handlers import CheckpointLoader

    handlers = getattr(trainer, "_event_handlers", {}).get(Events.STARTED, [])
    loaders = [handler for handler, *_ in handlers if isinstance(handler, CheckpointLoader)]
    for loader in loaders:
        trainer.remove_event_handler(loader, Events.STARTED)
    return loaders


def _floats(metrics: Mapping) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if torch.is_tensor(v) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            out[str(k)] = float(v)
    return out


class RoundRunner(Engine):
    """Rounds of weakly-supervised training as an Ignite engine: one engine epoch = one round.

    Round ``r`` (``r = 0`` is the initial round, trained on the static pools only, e.g. MixSup's pixel
    labels)::

        load the round's pseudo labels (store, made at the end of round r-1)  -> pools.set_pools(...)
        M-step: the MONAI trainer runs `epochs` more epochs on the pools, continuing its weights,
                optimizer and epoch count
        predict: `predictor` runs the trained network over every tissue patch of `slides`
        next pseudo labels: `rule(predictions, round_index=r+1, previous=...)` -> store (atomic)
        score: `scorer(predictions, round_index=r)` -> metrics (MixSup: stage-2 loss)
        checkpoint `ckpt_dir/rounds/round_XX.pt` + `ckpt_dir/rounds.json`

    The E-step of round ``r + 1`` (pseudo labels from the model of round ``r``) and the prediction round
    ``r``'s scorer needs (MixSup: top-K patches by the model of round ``r``) are the same pass over the
    same patches with the same model, so it runs once, at the end of round ``r``; the last round skips the
    rule.

    The pools are the trainer's dataset (a :class:`~mixsup_monai.rounds.PoolDataset`) and the predictor runs
    the trainer's network.

    **Resume.** Completed rounds are listed in ``ckpt_dir/rounds.json`` and each has its checkpoint
    (every object of ``save_dict``: network, optimizer, trainer state, scorer, ...), kept by
    :class:`~mixsup_monai.rounds.state.RoundCheckpoints` (``runner.checkpoints``). With ``resume=True`` a new
    run loads the last completed round's checkpoint and records and starts at the next round: completed
    rounds are loaded, not recomputed. Every round starts by seeding ``set_determinism(round_seed(seed, r))``
    and the training transforms, and reads its pseudo labels back from the store (also in an uninterrupted
    run), so a run killed in round ``r`` and resumed gives the same weights and metrics as an uninterrupted
    run with the same seed. ``max_rounds`` may grow between runs (continue a finished run for more rounds); a
    run whose rounds are all complete only fires ``STARTED`` / ``COMPLETED`` (selection and export handlers
    run again; nothing is recomputed).

    **Failures.** A run that fails keeps what it wrote: a round is listed in ``rounds.json`` only once its
    checkpoint and its next pseudo labels are complete, every file is written atomically (a failed write, e.g. a
    full disk, removes its temporary file and leaves the finished rounds byte-identical), and a slide of the
    datalist that is gone when an M-step or E-step starts stops the run with one
    :class:`~mixsup_monai.utils.errors.InputNotFoundError` naming it. Free the disk or restore the slide and
    resume: the result is that of an uninterrupted run. :class:`~mixsup_monai.handlers.MLflowRoundLogger` marks
    the run ``FAILED`` and continues it on resume.

    Handlers (``attach(runner)``): :class:`~mixsup_monai.handlers.RoundSelection` (best round, table, final
    model), :class:`~mixsup_monai.handlers.MLflowRoundLogger` (per-round metrics with ``step = round``),
    :class:`~mixsup_monai.handlers.RoundHeatmapSaver` (``SLIDE_PREDICTED``). ``runner.records`` holds one
    dict per completed round (including the ``runner.resumed_rounds`` rounds loaded on resume).

    Args:
        trainer: the M-step engine (a MONAI ``SupervisedTrainer``) whose data loader iterates a
            :class:`~mixsup_monai.rounds.PoolDataset`.
        predictor: the E-step :class:`~mixsup_monai.rounds.SlidePatchPredictor`.
        slides: datalist entries the E-step predicts (MixSup: image-labelled training slides).
        rule: pseudo-label rule, ``rule(predictions, round_index=, previous=, labels=) -> PseudoLabelSet`` (filling
            ``labels``, the store's set of the round, slide by slide; a rule without ``labels`` returns a set)
            (MixSup: :class:`~mixsup_monai.methods.mixsup.MixSupRule`).
        scorer: ``scorer(predictions, round_index=) -> {name: float}`` (MixSup:
            :class:`~mixsup_monai.methods.mixsup.TopKSlideClassifier`, metric ``stage2_loss``); ``None``: no score.
        ckpt_dir: folder of ``rounds.json`` and ``rounds/round_XX.pt``.
        store: the :class:`~mixsup_monai.rounds.PseudoLabelStore` or its folder (default ``ckpt_dir/pseudo_labels``).
        max_rounds: rounds after the initial round 0 (paper: 4).
        initial_epochs: M-step epochs of round 0 (0: no initial training, e.g. no supervised pool).
        epochs_per_round: M-step epochs of rounds ``>= 1``.
        save_dict: objects checkpointed per round (default: ``model`` = the trainer's network, ``optimizer``,
            ``trainer`` and ``classifier`` = scorer when it has ``state_dict``); e.g. add an LR scheduler.
        seed: run seed.
        resume: continue from ``ckpt_dir/rounds.json`` when present (False: start again, overwriting). A bool:
            a config passes a command-line value through :func:`mixsup_monai.utils.as_bool`.
        handlers: handlers to ``attach`` to the runner (``None`` items, disabled in a config, are skipped).
        config: the run's settings (e.g. the hyper-parameters logged to MLflow), stored in ``rounds.json``; a
            resume with different values (except ``max_rounds``) is refused instead of mixing two runs.

    Raises:
        ValueError: a round or epoch count is not a non-negative int (``epochs_per_round``: positive), or
            ``slides`` is empty.
        TypeError: ``resume`` is not a bool, or the trainer's dataset is not a ``PoolDataset``.
    """

    def __init__(
        self,
        trainer: Any,
        predictor: SlidePatchPredictor,
        slides: Sequence[Mapping],
        rule: Rule | None,
        scorer: Callable[..., Mapping[str, float]] | None,
        ckpt_dir: str,
        store: PseudoLabelStore | str | None = None,
        max_rounds: int = 3,
        initial_epochs: int = 2,
        epochs_per_round: int = 1,
        save_dict: Mapping[str, Any] | None = None,
        seed: int = 0,
        resume: bool = True,
        handlers: Sequence[Any] = (),
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(self._round)
        for name, value in (("max_rounds", max_rounds), ("initial_epochs", initial_epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if isinstance(epochs_per_round, bool) or not isinstance(epochs_per_round, int) or epochs_per_round < 1:
            raise ValueError(f"epochs_per_round must be an int >= 1, got {epochs_per_round!r}")
        if not isinstance(resume, bool):
            raise TypeError(
                f"resume must be True or False, got {resume!r}; in a config, pass a command-line value through "
                "mixsup_monai.utils.as_bool"
            )
        if not slides:
            raise ValueError("RoundRunner: no slides to predict (check the datalist's training slides and labels)")
        self.trainer = trainer
        self.predictor = predictor
        self.slides = [dict(s) for s in slides]
        self.rule = rule
        self.scorer = scorer
        self.ckpt_dir = Path(ckpt_dir)
        self.store = (
            store if isinstance(store, PseudoLabelStore) else PseudoLabelStore(store or self.ckpt_dir / "pseudo_labels")
        )
        self.max_rounds = max_rounds
        self.initial_epochs = initial_epochs
        self.epochs_per_round = epochs_per_round
        self.pools = getattr(trainer.data_loader, "dataset", None)
        if not isinstance(self.pools, PoolDataset):
            raise TypeError(
                "RoundRunner: the trainer's dataset must be a mixsup_monai.rounds.PoolDataset, got "
                f"{type(self.pools).__name__}"
            )
        self.network = trainer.network
        self.initial_weights = _detach_checkpoint_loaders(trainer)
        if save_dict is None:
            save_dict = {"model": self.network, "optimizer": trainer.optimizer, "trainer": trainer}
            if scorer is not None and hasattr(scorer, "state_dict"):
                save_dict["classifier"] = scorer
        self.seed = int(seed)
        self.resume = resume
        self.checkpoints = RoundCheckpoints(
            self.ckpt_dir, save_dict, seed=self.seed, max_rounds=max_rounds, config=config
        )
        self.resumed_rounds = 0
        self.register_events(*RoundEvents)
        for handler in handlers:
            if handler is not None:  # a disabled config item resolves to None
                handler.attach(self)

    @property
    def records(self) -> list[dict]:
        """One dict per completed round, in round order (kept by ``checkpoints``, written to ``rounds.json``)."""
        return self.checkpoints.records

    @property
    def total_rounds(self) -> int:
        """Rounds including round 0."""
        return self.max_rounds + 1

    # ------------------------------------------------------------------ running
    def run(self) -> None:  # type: ignore[override]
        """Run (or resume) the rounds up to ``max_rounds``."""
        completed = self._start_or_resume()
        self.state.epoch = self.state.iteration = completed
        self.state.max_epochs, self.state.epoch_length = self.total_rounds, 1
        if completed >= self.total_rounds:
            logger.info("all %d rounds are complete in %s; nothing to recompute", self.total_rounds, self.ckpt_dir)
            self.fire_event(Events.STARTED)
            self.fire_event(Events.COMPLETED)
            return
        super().run(data=[None], max_epochs=self.total_rounds)

    def _start_or_resume(self) -> int:
        """Load the completed rounds (``resume`` and a state file in ``ckpt_dir``) or start anew; returns how many."""
        resuming = self.resume and self.checkpoints.exists()
        # every rank has looked before rank 0 writes a new state file: else a slower rank finds that file, takes
        # the resume path, and the ranks wait at different barriers
        barrier()
        if resuming:
            self.resumed_rounds = self.checkpoints.load()
            return self.resumed_rounds
        if is_rank0():
            self.store.delete_from(0)  # pseudo labels of an earlier run in the same folder
        for loader in self.initial_weights:
            loader(self.trainer)
        self.checkpoints.start()
        self.resumed_rounds = 0
        return 0

    def _seed_round(self, round_index: int) -> int:
        seed = round_seed(self.seed, round_index)
        set_determinism(seed=seed)
        set_rnd(getattr(self.pools, "transform", None) or self.pools, seed)
        return seed

    def _check_slides(self, paths: Iterable[Any], step: str) -> None:
        """Stop with one clear line when a slide of the datalist is gone (deleted or moved since the start-up check).

        Checked before each M-step and E-step, in the main process: a read in a DataLoader worker would fail with
        a message meant for a mistyped path, and the finished rounds on disk are kept either way.

        Raises:
            InputNotFoundError: the first missing slide, named with the round and step that needs it.
        """
        for path in dict.fromkeys(p for p in paths if isinstance(p, (str, os.PathLike))):  # unique, in order
            if not os.path.exists(path):
                raise InputNotFoundError(
                    "slide not found",
                    path,
                    f"round {self.state.round}'s {step} reads it but it is gone (moved or deleted after the run "
                    "started?); restore it and resume the run (--resume true); finished rounds are kept",
                )

    def _mstep(self, epochs: int) -> dict[str, float]:
        trainer = self.trainer
        if epochs == 0:
            return {}
        if sum(self.pools.pool_sizes) == 0:
            logger.warning("round %d: every training pool is empty, the M-step is skipped", self.state.round)
            return {}
        length = len(trainer.data_loader)
        if trainer.state.epoch_length != length:
            trainer.state.epoch_length = length
            trainer.state.iteration = trainer.state.epoch * length
        trainer.state.max_epochs = trainer.state.epoch + epochs
        trainer.run()
        out = _floats(trainer.state.metrics or {})
        output = trainer.state.output
        if isinstance(output, list) and output and isinstance(output[0], Mapping) and "loss" in output[0]:
            out.setdefault("last_loss", float(output[0]["loss"]))
        out["epoch"] = float(trainer.state.epoch)
        return out

    def _observe(self, stream: Iterable[SlidePrediction], kept: list[SlidePrediction]) -> Iterator[SlidePrediction]:
        """Fire ``SLIDE_PREDICTED`` per slide and keep a light copy (no outputs) for the scorer."""
        observe = getattr(self.scorer, "observe", None)  # scorers that need the full maps (e.g. random forest)
        for pred in stream:
            self.state.slide_prediction = pred
            self.fire_event(RoundEvents.SLIDE_PREDICTED)
            if observe is not None:
                observe(pred)
            kept.append(
                SlidePrediction(
                    pred.slide, pred.items, torch.zeros(0), pred.scores, pred.downsample, pred.slide_size, pred.extra
                )
            )
            yield pred
        self.state.slide_prediction = None

    def make_pseudo_labels(
        self,
        round_index: int,
        previous: PseudoLabelSet | None,
        rule: Rule | None,
        kept: list[SlidePrediction] | None = None,
    ) -> PseudoLabelSet | None:
        """Predict every patch of ``slides`` with the current network; with a rule, store labels of ``round_index``.

        Args:
            round_index: the round the labels are for (the network is the one of round ``round_index - 1``).
            previous: the labels of round ``round_index - 1`` (``None`` before round 1), given to the rule.
            rule: the pseudo-label rule, or ``None`` to predict only (the last round: its predictions are scored,
                no round follows).
            kept: filled with a light copy of every slide's prediction (no outputs), for the scorer.

        Returns:
            The stored :class:`PseudoLabelSet` (``None`` without a rule).

        Raises:
            TypeError: the rule returned something other than a ``PseudoLabelSet``.
            InputNotFoundError: a slide of ``slides`` is gone (deleted or moved since the run started).
        """
        kept = [] if kept is None else kept
        self._check_slides((s.get("image") for s in self.slides), "prediction")
        self.state.prediction_round = round_index - 1
        shared = self.ckpt_dir / "e_step" / f"round_{round_index - 1:02d}"  # the ranks' outputs, under torchrun
        description = f"round {round_index - 1} predict"
        stream = self._observe(
            self.predictor.predict_across_ranks(self.slides, shared, self.network, description), kept
        )
        labels = None
        if rule is None or not is_rank0():  # one rule over every slide: the labels of one process, on rank 0
            for _ in stream:
                pass
        else:
            with self.store.open_round(round_index) as sink:
                extra = {"labels": sink} if _accepts_labels(rule) else {}  # without it a rule returns labels
                labels = rule(stream, round_index=round_index, previous=previous, **extra)
                if not isinstance(labels, PseudoLabelSet):
                    raise TypeError(f"the pseudo-label rule must return a PseudoLabelSet, got {type(labels).__name__}")
                labels.round_index = round_index
                self.store.save(labels)
        barrier()
        if is_rank0():
            shutil.rmtree(shared, ignore_errors=True)
        if rule is not None and labels is None:
            labels = self.store.load(round_index)
        return labels

    def _round(self, engine: Any, _: Any) -> dict:
        r = self.state.epoch - 1
        self.state.round = r
        t0 = time.time()
        self._seed_round(r)
        record: dict[str, Any] = {"round": r, "seed": round_seed(self.seed, r)}
        labels = None
        if r > 0:
            if not self.store.exists(r):
                # e.g. resumed with a larger max_rounds: the last round of the previous run made no labels
                logger.info("round %d: pseudo labels not in the store, predicting them with round %d's model", r, r - 1)
                prev = self.store.load(r - 1) if self.store.exists(r - 1) else None
                self.make_pseudo_labels(r, prev, self.rule)
                self._seed_round(r)
            labels = self.store.load(r)
            self.pools.set_pools(labels)
            record["pseudo_labels"] = {"path": str(self.store.path(r)), "sizes": labels.sizes(), **labels.stats}
            self.state.pseudo_labels = labels
            self.fire_event(RoundEvents.PSEUDO_LABELS_LOADED)
        record["pool_sizes"] = dict(zip(self.pools.names, self.pools.pool_sizes))
        epochs = self.initial_epochs if r == 0 else self.epochs_per_round
        if epochs:
            self._check_slides((it.get("image") for pool in self.pools.pools.values() for it in pool.items), "M-step")
        logger.info("round %d: M-step, %d epoch(s) on pools %s", r, epochs, record["pool_sizes"])
        record["mstep"] = self._mstep(epochs)
        self.fire_event(RoundEvents.MSTEP_COMPLETED)

        kept: list[SlidePrediction] = []
        last = r == self.max_rounds
        next_labels = self.make_pseudo_labels(r + 1, labels, None if last else self.rule, kept)
        self.state.next_pseudo_labels = next_labels
        if next_labels is not None:
            self.fire_event(RoundEvents.PSEUDO_LABELS_MADE)
        record["patches"] = int(sum(len(p) for p in kept))
        if self.scorer is not None:
            logger.info("round %d: scoring", r)
            record["metrics"] = _floats(self.scorer(kept, round_index=r))
        else:
            record["metrics"] = {}
        record["time_s"] = round(time.time() - t0, 2)
        self.state.round_record = record
        self.fire_event(RoundEvents.ROUND_SCORED)
        self.checkpoints.save_round(r, record)
        logger.info("round %d done in %.1f s: %s", r, record["time_s"], record["metrics"])
        return record
