"""Tests of the round runner (rounds flow, resume after a stop or a kill equals an uninterrupted run) and of its
resume state (``rounds.json`` + one checkpoint per round)."""

from __future__ import annotations

import json

import pytest
import torch

from mixsup_monai.handlers.mlflow_rounds import MLflowRoundLogger
from mixsup_monai.handlers.round_selection import RoundSelection, read_selection
from mixsup_monai.rounds import STATE_FILE, RoundCheckpoints, RoundRunner


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), f"{name} differs"


def _metrics(runner) -> list[dict]:
    return [
        (r["round"], r["metrics"], r["mstep"], r.get("pseudo_labels", {}).get("pseudo/kept")) for r in runner.records
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, runner_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    runner, net, theta2 = runner_factory(root, max_rounds=2)
    runner.run()
    return runner, net, theta2, root


def test_rounds_flow_records_checkpoints_and_store(uninterrupted):
    runner, _, _, root = uninterrupted
    assert [r["round"] for r in runner.records] == [0, 1, 2]
    state = json.loads((root / "rounds.json").read_text())
    assert state["seed"] == 0 and [r["round"] for r in state["rounds"]] == [0, 1, 2]
    for r in range(3):
        assert (root / "rounds" / f"round_{r:02d}.pt").is_file()
    # round r trains on the labels made by round r-1's model; the last round makes none
    assert runner.store.rounds() == [1, 2]
    first, second = runner.records[0], runner.records[1]
    assert "pseudo_labels" not in first and first["pool_sizes"]["positive"] == 0
    assert second["pool_sizes"]["positive"] + second["pool_sizes"]["negative"] == second["pseudo_labels"]["pseudo/kept"]
    for key in ("stage2_loss", "stage2_epoch_loss", "train_auc", "val_loss", "val_auc", "val_spec_at_100_sens"):
        assert key in first["metrics"]
    # the trainer's epoch count continues across rounds: 2 initial + 1 + 1
    assert runner.trainer.state.epoch == 4 and runner.records[2]["mstep"]["epoch"] == 4


def test_stop_after_round_1_then_resume_equals_uninterrupted(uninterrupted, runner_factory, tmp_path):
    ref_runner, ref_net, ref_theta2, _ = uninterrupted
    first, _, _ = runner_factory(tmp_path, max_rounds=1)
    first.run()
    assert [r["round"] for r in first.records] == [0, 1]
    resumed, net, theta2 = runner_factory(tmp_path, max_rounds=2)
    resumed.run()
    assert resumed.resumed_rounds == 2  # rounds 0 and 1 were loaded, not recomputed
    _assert_same_weights(net, ref_net)
    _assert_same_weights(theta2, ref_theta2)
    assert _metrics(resumed) == _metrics(ref_runner)


def test_kill_in_round_2_then_resume_equals_uninterrupted(uninterrupted, runner_factory, tmp_path):
    ref_runner, ref_net, _, _ = uninterrupted

    def kill_in_round_2(round_index):
        if round_index == 2:
            raise KeyboardInterrupt("killed")

    killed, _, _ = runner_factory(tmp_path, max_rounds=2, scorer_hook=kill_in_round_2)
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    state = json.loads((tmp_path / "rounds.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [0, 1]
    resumed, net, _ = runner_factory(tmp_path, max_rounds=2)
    resumed.run()
    assert resumed.resumed_rounds == 2
    _assert_same_weights(net, ref_net)
    assert _metrics(resumed) == _metrics(ref_runner)


def test_a_finished_run_is_not_recomputed(uninterrupted, runner_factory):
    _, ref_net, _, root = uninterrupted
    checkpoint = root / "rounds" / "round_02.pt"
    before = checkpoint.stat().st_mtime_ns
    selection = RoundSelection(output_dir=str(root / "again"))
    again, net, _ = runner_factory(root, max_rounds=2, handlers=[selection])
    again.run()
    assert checkpoint.stat().st_mtime_ns == before
    assert selection.best_round in (0, 1, 2) and (root / "again" / "rounds.md").is_file()
    _assert_same_weights(net, ref_net)  # the last round's weights were loaded


def test_resume_with_another_seed_is_refused(uninterrupted, runner_factory):
    root = uninterrupted[3]
    runner, _, _ = runner_factory(root, max_rounds=2, seed=1)
    with pytest.raises(ValueError, match="seed 0, this run has seed 1"):
        runner.run()


def test_selection_exports_the_best_round_and_mlflow_logs_each_round(runner_factory, tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    files = {"model": "model.pt", "classifier": "classifier.pt"}
    selection = RoundSelection(metric="stage2_loss", output_dir=str(tmp_path / "eval"), files=files)
    logger = MLflowRoundLogger(tracking_uri=uri, experiment_name="rounds_test", run_name="r", params={"T": 0.4})
    runner, _, _ = runner_factory(tmp_path / "ckpt", max_rounds=1, handlers=[selection, logger])
    runner.run()
    best = min(runner.records, key=lambda r: r["metrics"]["stage2_loss"])["round"]
    assert selection.best_round == best
    assert read_selection(tmp_path / "ckpt")["round"] == best
    round_checkpoint = torch.load(runner.records[best]["checkpoint"], weights_only=False)
    for entry, name in files.items():
        exported = torch.load(tmp_path / "ckpt" / name, weights_only=False)
        assert exported.keys() == round_checkpoint[entry].keys()
    table = (tmp_path / "eval" / "rounds.md").read_text()
    assert "stage2_loss" in table and table.count("**yes**") == 1
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("rounds_test").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["T"] == "0.4"
    history = client.get_metric_history(run.info.run_id, "stage2_loss")
    assert sorted(m.step for m in history) == [0, 1]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "pseudo/kept")] == [1]
    assert run.data.metrics["best_round"] == best


def test_resume_with_other_settings_is_refused(runner_factory, tmp_path):
    first, _, _ = runner_factory(tmp_path, max_rounds=0)
    first.checkpoints.config = {"T": "0.4", "max_rounds": "0"}
    first.run()
    again, _, _ = runner_factory(tmp_path, max_rounds=1)
    again.checkpoints.config = {"T": "0.5", "max_rounds": "1"}  # more rounds is fine, another T is not
    with pytest.raises(ValueError, match=r"written with other settings \(T: 0.4 -> 0.5\)"):
        again.run()


@pytest.mark.parametrize("resume", ["false", "true", 1, None])
def test_resume_must_be_a_bool(resume, tmp_path):
    with pytest.raises(TypeError, match=f"resume must be True or False, got {resume!r}"):
        RoundRunner(None, None, [], None, None, ckpt_dir=str(tmp_path), resume=resume)


# ---------------------------------------------------------------- the resume state alone (no training)
def _checkpoints(ckpt_dir, seed=0, max_rounds=3, config=None, net=None):
    net = net if net is not None else torch.nn.Linear(2, 1)
    return RoundCheckpoints(ckpt_dir, {"model": net}, seed=seed, max_rounds=max_rounds, config=config), net


def _two_rounds(ckpt_dir) -> list[torch.nn.Module]:
    """A run of two completed rounds in ``ckpt_dir``; returns the weights each round saved."""
    state, net = _checkpoints(ckpt_dir, config={"T": 0.4, "max_rounds": 3})
    state.start()
    saved = []
    for r in range(2):
        torch.nn.init.constant_(net.weight, float(r + 1))
        state.save_round(r, {"round": r, "metrics": {"loss": 1.0 / (r + 1)}})
        saved.append(net.weight.detach().clone())
    return saved


def test_state_file_round_trips_and_loads_the_last_checkpoint(tmp_path):
    saved = _two_rounds(tmp_path)
    assert STATE_FILE == "rounds.json"
    state = json.loads((tmp_path / STATE_FILE).read_text())
    # the format existing runs have on disk: a resume of those must keep working
    assert state == {
        "version": 1,
        "seed": 0,
        "max_rounds": 3,
        "config": {"T": "0.4", "max_rounds": "3"},
        "rounds": [
            {"round": r, "metrics": {"loss": 1.0 / (r + 1)}, "checkpoint": str(tmp_path / "rounds" / f"round_0{r}.pt")}
            for r in range(2)
        ],
    }
    again, net = _checkpoints(tmp_path, config={"T": "0.4", "max_rounds": "5"})  # more rounds is fine
    assert again.exists() and again.load() == 2
    assert again.records == state["rounds"]
    assert torch.equal(net.weight, saved[1])  # the last completed round, not the first
    capped, net = _checkpoints(tmp_path, max_rounds=0)  # a run of round 0 only loads round 0
    assert capped.load() == 1 and [r["round"] for r in capped.records] == [0]
    assert torch.equal(net.weight, saved[0])


def test_start_forgets_the_completed_rounds(tmp_path):
    _two_rounds(tmp_path)
    fresh, _ = _checkpoints(tmp_path)
    fresh.start()
    assert fresh.records == [] and json.loads((tmp_path / STATE_FILE).read_text())["rounds"] == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seed": 1}, "written by a run with seed 0, this run has seed 1"),
        ({"config": {"T": 0.5}}, r"written with other settings \(T: 0.4 -> 0.5\)"),
    ],
)
def test_resume_of_another_run_is_refused(kwargs, match, tmp_path):
    _two_rounds(tmp_path)
    other, net = _checkpoints(tmp_path, **kwargs)
    before = net.weight.detach().clone()
    with pytest.raises(ValueError, match=match):
        other.load()
    assert torch.equal(net.weight, before) and other.records == []  # nothing was loaded


def test_a_missing_checkpoint_is_reported(tmp_path):
    _two_rounds(tmp_path)
    (tmp_path / "rounds" / "round_01.pt").unlink()
    state, _ = _checkpoints(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"lists round 1 as complete but its checkpoint .*round_01\.pt"):
        state.load()


def test_a_checkpoint_lacking_an_object_is_reported(tmp_path):
    _two_rounds(tmp_path)
    state = RoundCheckpoints(tmp_path, {"model": torch.nn.Linear(2, 1), "classifier": torch.nn.Linear(2, 1)})
    with pytest.raises(KeyError, match=r"lacks \['classifier'\]"):
        state.load()


def test_rounds_out_of_order_and_other_versions_are_refused(tmp_path):
    _two_rounds(tmp_path)
    path = tmp_path / STATE_FILE
    state = json.loads(path.read_text())
    path.write_text(json.dumps({**state, "rounds": state["rounds"][1:]}))
    with pytest.raises(ValueError, match=r"rounds must be 0, 1, 2, ...; got \[1\]"):
        _checkpoints(tmp_path)[0].load()
    path.write_text(json.dumps({**state, "version": 2}))
    with pytest.raises(ValueError, match="has version 2, expected 1"):
        _checkpoints(tmp_path)[0].load()


def test_a_checkpoint_loader_of_the_trainer_loads_once_before_round_0(runner_factory, tmp_path):
    """MONAI Label's ``pretrained`` puts a ``CheckpointLoader`` in ``train#handlers``: it fires at every
    ``trainer.run()``, i.e. every M-step; the runner detaches it and applies it once, before round 0, so that
    round 1 continues from round 0's network instead of the pretrained one."""
    from monai.handlers import CheckpointLoader

    class CountingLoader(CheckpointLoader):
        calls = 0

        def __call__(self, engine):
            type(self).calls += 1
            super().__call__(engine)

    _, pretrained_net, _ = runner_factory(tmp_path / "init", max_rounds=0)
    torch.nn.init.constant_(next(pretrained_net.parameters()), 0.5)
    torch.save(pretrained_net.state_dict(), tmp_path / "model.pt")
    loader = CountingLoader(str(tmp_path / "model.pt"), {"model": pretrained_net})  # re-pointed below
    runner, net, _ = runner_factory(tmp_path / "run", max_rounds=1, train_handlers=[loader])
    loader.load_dict = {"model": net}
    assert not runner.trainer.has_event_handler(loader)
    assert runner.initial_weights == [loader]
    net_first = next(net.parameters())
    runner.run()
    assert CountingLoader.calls == 1  # two M-steps: it would be 2 with the loader left on the trainer
    assert len(runner.records) == 2
    assert not torch.allclose(net_first, torch.full_like(net_first, 0.5))  # trained on after the load
