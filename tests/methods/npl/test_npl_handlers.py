"""NPL training glue: M-step early stopping with best-weight restore, the scorer, the MobileNetV2 options."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from mixsup_monai.handlers.round_selection import SelectionMode, is_improvement, select_round
from mixsup_monai.methods.npl import EvaluatorScorer, MStepEarlyStopping, mobilenet_v2_classifier


class FakeEvaluator:
    """Returns the next validation loss of ``losses`` on each run; the network's weight records the epoch."""

    def __init__(self, losses):
        self.losses = list(losses)
        self.network = torch.nn.Linear(1, 1, bias=False)
        self.state = type("State", (), {"metrics": {}})()
        self.runs = 0

    def run(self):
        self.state.metrics = {"val_loss": self.losses[self.runs], "val_miou": torch.tensor(0.5), "flag": True}
        self.runs += 1


def train(evaluator, max_epochs, **kwargs):
    def step(engine, batch):
        with torch.no_grad():
            evaluator.network.weight.fill_(float(engine.state.epoch))  # weights "of epoch e"
        return 0.0

    engine = Engine(step)
    stopper = MStepEarlyStopping(evaluator, **kwargs)
    stopper.attach(engine)
    stopper.attach(engine)  # attaching twice is harmless
    engine.run([0], max_epochs=max_epochs)
    return engine, stopper


def test_stops_after_patience_and_restores_best_epoch():
    evaluator = FakeEvaluator([1.0, 0.8, 0.9, 0.85, 0.95, 0.1])
    engine, stopper = train(evaluator, max_epochs=6, patience=3)
    assert engine.state.epoch == 5 and evaluator.runs == 5  # epochs 3, 4, 5 did not improve on 0.8
    assert evaluator.network.weight.item() == 2.0  # the weights of epoch 2 are back
    assert engine.state.metrics["best_val_loss"] == 0.8 and engine.state.metrics["best_epoch"] == 2.0
    assert [h["val_loss"] for h in stopper.history] == [1.0, 0.8, 0.9, 0.85, 0.95]
    assert engine.state.metrics["epoch_val_loss"] == 0.95  # per-epoch value under its own name


def test_each_run_starts_afresh():
    evaluator = FakeEvaluator([0.5, 0.6, 0.9, 0.8, 0.7])
    engine, stopper = train(evaluator, max_epochs=2, patience=5)
    assert stopper.best == 0.5
    engine.run([0], max_epochs=5)  # a second M-step: best is of this M-step (0.7 at epoch 5), not 0.5
    assert stopper.best == 0.7 and stopper.best_epoch == 5 and evaluator.network.weight.item() == 5.0


def test_max_mode_and_missing_metric():
    evaluator = FakeEvaluator([0.1, 0.3, 0.2])
    _, stopper = train(evaluator, max_epochs=3, metric="val_loss", mode="max", patience=2)
    assert stopper.best_epoch == 2 and evaluator.network.weight.item() == 2.0
    with pytest.raises(KeyError, match=r"no metric 'dice'; it has \['flag', 'val_loss', 'val_miou'\]"):
        train(FakeEvaluator([1.0]), max_epochs=1, metric="dice")


def test_mode_is_the_selection_enum_and_shares_round_selections_comparison():
    _, stopper = train(FakeEvaluator([0.1, 0.3, 0.2]), max_epochs=3, mode="max", patience=5)
    assert stopper.mode is SelectionMode.MAX and stopper.best_epoch == 2
    # NaN never improves, min_delta must be exceeded: the same answers as round selection on the same values
    values = [float("nan"), 1.0, 0.95, 0.7, 0.69]
    _, stopper = train(FakeEvaluator(values), max_epochs=5, patience=5, min_delta=0.1)
    assert stopper.best_epoch == 4 and stopper.best == 0.7
    assert [is_improvement(v, 1.0, "min", 0.1) for v in values] == [False, False, False, True, True]
    assert is_improvement(0.5, None, "max") and not is_improvement(None, None) and not is_improvement(1.0, 1.0)
    records = [{"round": r, "metrics": {"val_loss": v}} for r, v in enumerate(values)]
    assert select_round(records, "val_loss", "min") == 4 and select_round(records, "val_loss", "max") == 1


@pytest.mark.parametrize(
    "kwargs, match", [({"mode": "up"}, "'up' is not a valid value"), ({"patience": 0}, "patience must")]
)
def test_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MStepEarlyStopping(FakeEvaluator([]), **kwargs)


def test_scorer_returns_numbers_only():
    assert EvaluatorScorer(FakeEvaluator([0.25]))() == {"val_loss": 0.25, "val_miou": 0.5}


def test_mobilenet_head_and_frozen_features():
    net = mobilenet_v2_classifier(6, freeze_features=True, width_mult=0.25)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 6)
    assert not any(p.requires_grad for p in net.backbone.features.parameters())
    assert all(p.requires_grad for p in net.backbone.classifier.parameters())
    net.train()
    assert not net.backbone.features.training and net.backbone.classifier.training


def test_mobilenet_loads_local_imagenet_weights(tmp_path):
    import torchvision

    reference = torchvision.models.mobilenet_v2(weights=None)
    torch.save(reference.state_dict(), tmp_path / "imagenet.pth")
    net = mobilenet_v2_classifier(6, weights_path=str(tmp_path / "imagenet.pth"), freeze_features=True)
    torch.testing.assert_close(net.backbone.features[0][0].weight, reference.features[0][0].weight)
    with pytest.raises(ValueError, match="not both"):
        mobilenet_v2_classifier(6, weights="IMAGENET1K_V1", weights_path="x.pth")
    with pytest.raises(ValueError, match="width_mult=1.0"):
        mobilenet_v2_classifier(6, weights_path="x.pth", width_mult=0.5)
