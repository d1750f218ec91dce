"""Ignite handler logging each round of a RoundRunner to MLflow: metrics with step = round, heat maps, table."""

from __future__ import annotations

import json
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
from mixsup_monai.utils.io import write_json_atomic

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
mlflow, _ = optional_import("mlflow", descriptor="Please install mlflow before using MLflowRoundLogger.")

__all__ = ["MLflowRoundLogger", "RUN_FILE"]

logger = logging.getLogger(__name__)

#: file in the runner's ``ckpt_dir`` naming the MLflow run of the rounds there (written atomically, rank 0).
RUN_FILE = "mlflow_run.json"
#: tag of every run: the absolute ``ckpt_dir`` whose rounds the run logs.
CKPT_DIR_TAG = "mixsup_monai.ckpt_dir"
#: tag of a run: how many rounds (0, 1, ...) are logged in it, so that a continued run logs each round once.
ROUNDS_LOGGED_TAG = "mixsup_monai.rounds_logged"
#: tag of a new run that resumes the rounds of an earlier (finished) run: that run's id.
RESUMED_FROM_TAG = "mixsup_monai.resumed_from"

_RUNNING, _FINISHED, _KILLED = "RUNNING", "FINISHED", "KILLED"


class MLflowRoundLogger:
    """Log a :class:`~mixsup_monai.rounds.RoundRunner` to one MLflow run.

    * ``STARTED``: picks the run (see *Resume* below) or creates one called ``run_name`` in ``experiment_name``,
      tagged ``mixsup_monai.ckpt_dir`` (the runner's absolute ``ckpt_dir``) and named in ``ckpt_dir/mlflow_run.json``;
      logs ``params`` and the loaded rounds of a resumed runner not yet logged in the run (tagged
      ``resumed_rounds``). A MONAI ``MLFlowHandler`` on the M-step trainer with the same ``run_name`` and
      ``close_on_complete=False`` finds the run by name (the oldest unfinished one of that name) and logs its
      per-epoch training loss into it;
    * ``EPOCH_COMPLETED`` (a round is done): every number of the round record with ``step = round`` --
      ``pseudo/kept``, ``pseudo/dropped``, ``pseudo/hard_negatives``, ``pseudo/positive_pixel_fraction``,
      ``stage2_loss``, ``val_auc``, ``mstep/train_loss``, ``pool/*`` ... (see
      :func:`~mixsup_monai.handlers.round_selection.flatten_record`) -- and the round's heat maps
      (``heatmap_dir/round_XX`` -> artifacts ``heatmaps/round_XX``);
    * ``COMPLETED``: ``best_round`` (from :class:`~mixsup_monai.handlers.RoundSelection`, attached before this
      handler), the files of ``artifacts`` (round table, montage) and closes the run (``FINISHED``);
      ``EXCEPTION_RAISED`` closes it as ``FAILED``.

    **Resume.** A process killed (``kill -9``) leaves its run ``RUNNING``. When the runner resumes
    (``resume=True`` on a ``ckpt_dir`` of an earlier process), the run named in ``ckpt_dir/mlflow_run.json`` is
    continued unless it is ``FINISHED`` (killed: ``RUNNING``; crashed: ``FAILED``): it is set ``RUNNING`` again
    and renamed ``run_name`` (the bundles' run names carry the start time, and the trainer's ``MLFlowHandler``
    finds the run by name), the rounds it lacks (tag ``mixsup_monai.rounds_logged``) are logged, and the run goes
    on: one run holds the metrics of every round. The epochs of the round the kill interrupted are recomputed and
    the trainer logs their ``train_loss`` again at the same steps (same values: a resume is deterministic). A
    ``FINISHED`` run (e.g. continued for more rounds) is not reopened: a new run logs every round and is tagged
    ``mixsup_monai.resumed_from`` = the old run's id. Any other run of the ``ckpt_dir`` still ``RUNNING`` (e.g. of a
    process killed before a ``resume=False`` start in the same ``ckpt_dir``) is marked ``KILLED``: after a start or
    a resume, no earlier run of the ``ckpt_dir`` stays ``RUNNING``. With a fixed ``run_name`` (no time stamp) the
    trainer's ``MLFlowHandler`` may pick an older ``KILLED`` or ``FAILED`` run of that name; keep run names unique.

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
        #: id of the finished run a resumed runner's new run continues (tag ``mixsup_monai.resumed_from``).
        self.resumed_from: str | None = None

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
    def _experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            return self.client.create_experiment(self.experiment_name, artifact_location=self.artifact_location)
        return experiment.experiment_id

    def _previous_run(self, run_file: Path, experiment_id: str) -> Any:
        """The run named in ``run_file`` if it is of this experiment, else ``None``."""
        try:
            with open(run_file) as f:
                run_id = json.load(f)["run_id"]
            run = self.client.get_run(run_id)
        except (OSError, ValueError, KeyError, TypeError, mlflow.exceptions.MlflowException):
            return None  # no file (a new ckpt_dir), an unreadable one, or a run of another tracking store
        return run if run.info.experiment_id == experiment_id else None

    def _start_run(self, engine: Any) -> None:
        """Continue the run of a resumed ``ckpt_dir`` or create one; mark other runs of ``ckpt_dir`` left RUNNING."""
        self.client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        experiment_id = self._experiment_id()
        ckpt_dir = getattr(engine, "ckpt_dir", None)
        ckpt_dir = None if ckpt_dir is None else Path(ckpt_dir).resolve()
        previous = None if ckpt_dir is None else self._previous_run(ckpt_dir / RUN_FILE, experiment_id)
        self.resumed_from = None
        run = None
        if previous is not None and getattr(engine, "resume", False):
            if previous.info.status != _FINISHED:
                run = previous
                logger.info("continuing MLflow run %s (%s)", run.info.run_id, previous.info.status)
                self.client.update_run(run.info.run_id, status=_RUNNING, name=self.run_name)
            else:
                self.resumed_from = previous.info.run_id
        if ckpt_dir is not None:
            self._kill_left_running(experiment_id, ckpt_dir, keep=None if run is None else run.info.run_id)
        if run is None and ckpt_dir is None:
            # not a RoundRunner (no ckpt_dir to tell runs apart): the unfinished run of that name, as MLFlowHandler
            runs = [
                r
                for r in self.client.search_runs([experiment_id])
                if self.run_name is not None and r.info.run_name == self.run_name and r.info.status != _FINISHED
            ]
            run = runs[-1] if runs else None
        if run is None:
            tags = {} if ckpt_dir is None else {CKPT_DIR_TAG: str(ckpt_dir)}
            if self.resumed_from is not None:
                tags[RESUMED_FROM_TAG] = self.resumed_from
            run = self.client.create_run(experiment_id, run_name=self.run_name, tags=tags)
        self.run_id = run.info.run_id
        if ckpt_dir is not None:
            write_json_atomic(
                ckpt_dir / RUN_FILE,
                {"run_id": self.run_id, "experiment_name": self.experiment_name, "run_name": self.run_name},
            )

    def _kill_left_running(self, experiment_id: str, ckpt_dir: Path, keep: str | None) -> None:
        """Mark ``KILLED`` the runs of ``ckpt_dir`` that a killed process left ``RUNNING`` (except ``keep``)."""
        # let the tracking store filter: an experiment may hold many runs of other ckpt_dirs
        folder = str(ckpt_dir).replace("'", "\\'")
        query = f"attributes.status = '{_RUNNING}' and tags.`{CKPT_DIR_TAG}` = '{folder}'"
        for r in self.client.search_runs([experiment_id], filter_string=query):
            if r.info.run_id != keep and r.data.tags.get(CKPT_DIR_TAG) == str(ckpt_dir):
                logger.info("MLflow run %s of %s was left RUNNING (killed): marking it KILLED", r.info.run_id, ckpt_dir)
                self.client.set_terminated(r.info.run_id, _KILLED)

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
        self.client.set_tag(self.run_id, ROUNDS_LOGGED_TAG, str(step + 1))

    def started(self, engine: Any) -> None:
        if not is_rank0():
            return
        self._start_run(engine)
        run = self.client.get_run(self.run_id)
        params = [mlflow.entities.Param(k, str(v)) for k, v in self.params.items()]
        params = [p for p in params if p.key not in run.data.params]
        if params:
            self.client.log_batch(self.run_id, params=params)
        resumed = getattr(engine, "resumed_rounds", 0)
        if resumed:
            self.client.set_tag(self.run_id, "resumed_rounds", str(resumed))
            logged = int(run.data.tags.get(ROUNDS_LOGGED_TAG, 0))
            for record in engine.records[logged:resumed]:
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
