"""Ignite handler logging each round of a RoundRunner to MLflow: metrics with step = round, heat maps, table."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.utils import min_version, optional_import

from mixsup_monai.handlers.round_selection import flatten_record
from mixsup_monai.utils.distributed import is_rank0

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
mlflow, _ = optional_import("mlflow", descriptor="Please install mlflow before using MLflowRoundLogger.")

__all__ = ["MLflowRoundLogger"]

logger = logging.getLogger(__name__)


class MLflowRoundLogger:
    """Log a :class:`~mixsup_monai.rounds.RoundRunner` to one MLflow run.

    * ``STARTED``: finds the active run called ``run_name`` in ``experiment_name`` or creates it (a MONAI
      ``MLFlowHandler`` on the M-step trainer with the same ``run_name`` and ``close_on_complete=False`` then
      logs its per-epoch training loss into the same run), logs ``params`` and re-logs the rounds a resumed
      run loaded from ``rounds.json`` (tagged ``resumed_rounds``);
    * ``EPOCH_COMPLETED`` (a round is done): every number of the round record with ``step = round`` --
      ``pseudo/kept``, ``pseudo/dropped``, ``pseudo/hard_negatives``, ``pseudo/positive_pixel_fraction``,
      ``stage2_loss``, ``val_auc``, ``mstep/train_loss``, ``pool/*`` ... (see
      :func:`~mixsup_monai.handlers.round_selection.flatten_record`) -- and the round's heat maps
      (``heatmap_dir/round_XX`` -> artifacts ``heatmaps/round_XX``);
    * ``COMPLETED``: ``best_round`` (from :class:`~mixsup_monai.handlers.RoundSelection`, attached before this
      handler), the files of ``artifacts`` (round table, montage) and closes the run (``FINISHED``);
      ``EXCEPTION_RAISED`` closes it as ``FAILED``.

    Rank 0 only.

    Args:
        tracking_uri: MLflow tracking URI (e.g. ``mixsup_monai.utils.sqlite_tracking_uri("mlruns")``).
        experiment_name: experiment of the run.
        run_name: name of the run shared with the trainer's ``MLFlowHandler``.
        artifact_location: artifact root of a new experiment.
        params: parameters logged once (hyper-parameters of the run).
        heatmap_dir: folder with one ``round_XX`` sub-folder of heat maps per round.
        artifacts: files or folders logged at the end (e.g. the round table).
        close_on_complete: end the run when the runner completes.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str = "rounds",
        run_name: str | None = None,
        artifact_location: str | None = None,
        params: Mapping[str, Any] | None = None,
        heatmap_dir: str | None = None,
        artifacts: Sequence[str] | str | None = None,
        close_on_complete: bool = True,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.artifact_location = artifact_location
        self.params = dict(params or {})
        self.heatmap_dir = heatmap_dir
        self.artifacts = [artifacts] if isinstance(artifacts, str) else list(artifacts or [])
        self.close_on_complete = close_on_complete
        self.client = None
        self.run_id: str | None = None

    def attach(self, engine: Any) -> None:
        for event, handler in (
            (Events.STARTED, self.started),
            (Events.EPOCH_COMPLETED, self.round_completed),
            (Events.COMPLETED, self.completed),
            (Events.EXCEPTION_RAISED, self.exception_raised),
        ):
            if not engine.has_event_handler(handler, event):
                engine.add_event_handler(event, handler)

    # ------------------------------------------------------------------ run
    def _start_run(self) -> None:
        self.client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            experiment_id = self.client.create_experiment(
                self.experiment_name, artifact_location=self.artifact_location
            )
        else:
            experiment_id = experiment.experiment_id
        finished = mlflow.entities.RunStatus.to_string(mlflow.entities.RunStatus.FINISHED)
        runs = [
            r
            for r in self.client.search_runs([experiment_id])
            if self.run_name is not None and r.info.run_name == self.run_name and r.info.status != finished
        ]
        run = runs[-1] if runs else self.client.create_run(experiment_id, run_name=self.run_name)
        self.run_id = run.info.run_id

    def _log_round(self, record: Mapping) -> None:
        step = int(record["round"])
        values = {k: v for k, v in flatten_record(record).items() if k != "round" and math.isfinite(v)}
        metrics = [mlflow.entities.Metric(k, float(v), int(time.time() * 1000), step) for k, v in values.items()]
        for i in range(0, len(metrics), 500):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 500])
        if self.heatmap_dir:
            folder = Path(self.heatmap_dir) / f"round_{step:02d}"
            if folder.is_dir() and any(folder.iterdir()):
                self.client.log_artifacts(self.run_id, str(folder), artifact_path=f"heatmaps/round_{step:02d}")

    def started(self, engine: Any) -> None:
        if not is_rank0():
            return
        self._start_run()
        params = [mlflow.entities.Param(k, str(v)) for k, v in self.params.items()]
        logged = self.client.get_run(self.run_id).data.params
        params = [p for p in params if p.key not in logged]
        if params:
            self.client.log_batch(self.run_id, params=params)
        resumed = getattr(engine, "resumed_rounds", 0)
        if resumed:
            self.client.set_tag(self.run_id, "resumed_rounds", str(resumed))
            for record in engine.records[:resumed]:
                self._log_round(record)

    def round_completed(self, engine: Any) -> None:
        if not is_rank0() or self.run_id is None:
            return
        self._log_round(engine.records[-1])
        best = getattr(engine.state, "best_round", None)
        if best is not None:
            self.client.log_metric(self.run_id, "best_round_so_far", float(best), step=int(engine.state.round))

    def completed(self, engine: Any) -> None:
        if not is_rank0() or self.run_id is None:
            return
        best = getattr(engine.state, "best_round", None)
        if best is not None:
            self.client.log_metric(self.run_id, "best_round", float(best))
            self.client.set_tag(self.run_id, "best_round", str(best))
        for path in self.artifacts:
            if os.path.isfile(path):
                self.client.log_artifact(self.run_id, path)
            elif os.path.isdir(path):
                self.client.log_artifacts(self.run_id, path, artifact_path=Path(path).name)
        if self.close_on_complete:
            self.client.set_terminated(self.run_id, "FINISHED")
            self.run_id = None

    def exception_raised(self, engine: Any, e: Exception) -> None:
        if is_rank0() and self.run_id is not None:
            self.client.set_terminated(self.run_id, "FAILED")
            self.run_id = None
        raise e
