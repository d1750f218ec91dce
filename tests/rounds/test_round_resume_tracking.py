"""After a kill and a resume: no MLflow run of the ckpt_dir stays RUNNING, one run holds every round's metrics
(also the trainer's per-epoch ``train_loss``), and the heat-map montage shows every round on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixsup_monai.handlers.mlflow_rounds import (
    CKPT_DIR_TAG,
    RESUMED_FROM_TAG,
    ROUNDS_LOGGED_TAG,
    RUN_FILE,
    MLflowRoundLogger,
)
from mixsup_monai.handlers.round_heatmaps import RoundHeatmapSaver

EXPERIMENT = "resume_test"


def _kill_in_round(kill_round: int):
    def hook(round_index):
        if round_index == kill_round:
            raise KeyboardInterrupt("killed")

    return hook


class _KilledLogger(MLflowRoundLogger):
    """A logger of a process killed with ``kill -9``: nothing closes its run, which stays RUNNING."""

    def exception_raised(self, engine, e):
        raise e


def _run(runner_factory, ckpt_dir, uri, run_name, max_rounds, heatmap_dir=None, kill_round=None, resume=True):
    """A runner with the MLflow logger (and heat maps), the trainer logging ``train_loss`` per epoch by run name."""
    from monai.handlers import MLFlowHandler

    logger = (MLflowRoundLogger if kill_round is None else _KilledLogger)(
        tracking_uri=uri, experiment_name=EXPERIMENT, run_name=run_name, artifact_location=str(ckpt_dir / "mlruns")
    )
    saver = None if heatmap_dir is None else RoundHeatmapSaver(str(heatmap_dir), per_class=1, max_size=64)
    handlers = [logger] if saver is None else [saver, logger]
    hook = None if kill_round is None else _kill_in_round(kill_round)
    runner, _, _ = runner_factory(ckpt_dir, max_rounds=max_rounds, handlers=handlers, scorer_hook=hook)
    runner.resume = resume
    MLFlowHandler(
        tracking_uri=uri,
        experiment_name=EXPERIMENT,
        run_name=run_name,
        iteration_log=False,
        epoch_log=True,
        close_on_complete=False,
    ).attach(runner.trainer)
    if kill_round is None:
        runner.run()
    else:
        with pytest.raises(KeyboardInterrupt):
            runner.run()
    run_id = json.loads((ckpt_dir / RUN_FILE).read_text())["run_id"]
    return runner, run_id, saver


def _runs(uri):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    return client, client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])


def test_kill_then_resume_continues_the_run_and_rebuilds_the_montage(runner_factory, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ckpt, maps = tmp_path / "ckpt", tmp_path / "maps"
    _run(runner_factory, ckpt, uri, "first", max_rounds=2, heatmap_dir=maps, kill_round=2)
    client, (killed,) = _runs(uri)
    assert killed.info.status == "RUNNING" and killed.data.tags[CKPT_DIR_TAG] == str(ckpt.resolve())
    assert json.loads((ckpt / RUN_FILE).read_text())["run_id"] == killed.info.run_id

    runner, run_id, saver = _run(runner_factory, ckpt, uri, "second", max_rounds=2, heatmap_dir=maps)
    assert runner.resumed_rounds == 2
    client, (run,) = _runs(uri)  # the killed run was continued, no second run
    assert run.info.run_id == killed.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.info.run_name == "second" and run.data.tags[ROUNDS_LOGGED_TAG] == "3"
    # every round's metrics once, in the one run
    assert [m.step for m in client.get_metric_history(run.info.run_id, "stage2_loss")] == [0, 1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "pseudo/kept")] == [1, 2]
    # the trainer's MLFlowHandler (same run name) logged into the same run: epochs 1-4 (2 + 1 + 1); epoch 4,
    # of the round the kill interrupted, is logged again by the resumed process with the same value
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted({m.step for m in history}) == [1, 2, 3, 4]
    assert len({m.value for m in history if m.step == 4}) == 1

    # the montage has the rounds predicted before the kill (0, 1) and after the resume (2)
    assert saver.montage_rounds == [0, 1, 2] and sorted(r for per in saver.saved.values() for r in per) == [2, 2]
    from PIL import Image

    with Image.open(maps / "montage.png") as img:
        size = img.size
    shapes = [np.asarray(Image.open(p)).shape for p in sorted((maps / "round_02").glob("*_prob.png"))]
    assert len(shapes) == 2 and all((maps / f"round_{r:02d}").is_dir() for r in (0, 1))
    # one row per slide, a thumbnail and one column per round (3), each followed by a 4 px gap
    assert size == (max(4 * (w + 4) for _, w, _ in shapes), sum(h + 4 for h, _, _ in shapes))


def test_a_finished_run_is_linked_and_a_restart_kills_a_run_left_running(runner_factory, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ckpt = tmp_path / "ckpt"
    _, first, _ = _run(runner_factory, ckpt, uri, "first", max_rounds=0)
    # continued for one more round: the finished run is not reopened, the new one logs every round and links it
    _, second, _ = _run(runner_factory, ckpt, uri, "second", max_rounds=1)
    client, runs = _runs(uri)
    by_id = {r.info.run_id: r for r in runs}
    assert by_id[first].info.status == "FINISHED" and by_id[second].info.status == "FINISHED"
    assert by_id[second].data.tags[RESUMED_FROM_TAG] == first
    assert [m.step for m in client.get_metric_history(second, "stage2_loss")] == [0, 1]

    # killed in round 0, then started anew (resume=False): the killed run is marked KILLED
    other = tmp_path / "other"
    _, killed, _ = _run(runner_factory, other, uri, "third", max_rounds=0, kill_round=0)
    _, fresh, _ = _run(runner_factory, other, uri, "fourth", max_rounds=0, resume=False)
    client, runs = _runs(uri)
    by_id = {r.info.run_id: r for r in runs}
    assert by_id[killed].info.status == "KILLED" and by_id[fresh].info.status == "FINISHED"
    assert RESUMED_FROM_TAG not in by_id[fresh].data.tags
    assert not [r for r in runs if r.info.status == "RUNNING"]
