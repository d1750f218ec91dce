"""Tests of MixSup stage 2: top-K selection, the mean-of-K slide probability, balanced loss, the random forest."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.networks.nets import Classifier

from mixsup_monai.methods.mixsup import (
    FEATURE_NAMES,
    MixSupRule,
    RandomForestSlideClassifier,
    TopKMeanClassifier,
    TopKSlideClassifier,
    balanced_bce,
    morphological_features,
    top_k_indices,
)
from mixsup_monai.rounds import SlidePrediction

CONFIGS = Path(__file__).resolve().parents[3] / "bundles" / "mixsup" / "configs"


def test_top_k_indices_by_score_ties_by_order_and_cycled():
    assert top_k_indices(torch.tensor([0.1, 0.9, 0.5, 0.9]), 3) == [1, 3, 2]
    assert top_k_indices(torch.tensor([0.2, 0.7]), 5) == [1, 0, 1, 0, 1]
    assert top_k_indices(torch.tensor([]), 4) == []


class Constant(torch.nn.Module):
    """Patch logit = mean of the patch (to check the reshaping of K patches)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3)).reshape(-1, 1)


def test_slide_probability_is_the_mean_of_the_k_patch_probabilities():
    model = TopKMeanClassifier(Constant())
    patches = torch.zeros(2, 3, 3, 4, 4)  # 2 slides, K = 3
    patches[0, 0] = 2.0  # slide 0: logits 2, 0, 0
    expected = torch.tensor([[(torch.sigmoid(torch.tensor(2.0)) + 1.0) / 3], [0.5]])
    torch.testing.assert_close(model(patches), expected)
    torch.testing.assert_close(model(patches.reshape(2, 9, 4, 4)), expected)  # K patches stacked on channels
    with pytest.raises(ValueError, match="K \\* 3 channels"):
        model(torch.zeros(1, 4, 4, 4))


def test_balanced_bce_weighs_classes_equally():
    # negatives: p = 0.5, 0.5 -> log 2 each; positive: p = 0.5 -> log 2: mean of class means = log 2
    assert balanced_bce(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.0, 0.0, 1.0])) == pytest.approx(math.log(2))
    # 3 easy negatives do not dilute one hard positive
    value = balanced_bce(torch.tensor([0.01, 0.01, 0.01, 0.1]), torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert value == pytest.approx((-math.log(0.99) - math.log(0.1)) / 2)


def test_morphological_features_hand_made_map():
    prob = np.zeros((10, 10))
    prob[1:4, 1:5] = 0.95  # 12 px region
    prob[7, 7] = 0.6  # 1 px region
    f = dict(zip(FEATURE_NAMES, morphological_features(prob, threshold=0.5, pixel_size=2.0)))
    assert f["regions"] == 2 and f["total_area"] == 13 * 4 and f["largest_area"] == 12 * 4
    assert f["second_area"] == 4 and f["largest_solidity"] == 1.0 and f["max_probability"] == 0.95
    assert f["fraction_above_0.9"] == pytest.approx(0.12)
    assert not morphological_features(np.zeros((4, 4))).any()


def _slide(i: int, label: int, size: int) -> SlidePrediction:
    maps = torch.zeros(4, 1, 8, 8)
    maps[0, 0, :size, :size] = 0.9
    items = [{"image": f"/s{i}.tif", "location": [8 * j, 0], "size": [8, 8], "level": 0} for j in range(4)]
    return SlidePrediction({"image": f"/s{i}.tif", "label": label}, items, maps, maps.flatten(1).amax(1), 1.0, (32, 8))


def test_random_forest_scorer_learns_slide_classes_from_tumour_size():
    preds = [_slide(i, label, [0, 3, 7][label]) for i in range(18) for label in [i % 3]]
    scorer = RandomForestSlideClassifier(num_classes=3, n_estimators=50, heatmap_downsample=1.0)
    for p in preds:
        scorer.observe(p)
    out = scorer(preds, round_index=1)
    assert out["train_kappa"] == pytest.approx(1.0) and out["stage2_loss"] < 0.3
    assert list(scorer.predict(preds[:3])) == [0, 1, 2]
    with pytest.raises(ValueError, match="observe\\(\\) during the prediction pass"):
        scorer(preds, round_index=2)  # features are consumed by each fit


def test_mixsup_rule_with_multi_class_slide_labels():
    preds = [_slide(0, 2, 3), _slide(1, 0, 3)]  # pN stage 2 is positive, 0 negative
    labels = MixSupRule(positive_labels=[1, 2, 3])(preds, round_index=1)
    assert labels.sizes() == {"positive": 1, "negative": 1}
    with pytest.raises(ValueError, match=r"need 0 \(negative\) or 1 \(positive\); for multi-class slide labels pass"):
        MixSupRule()(preds, round_index=1)


def _theta2() -> torch.nn.Module:
    return Classifier(in_shape=(3, 8, 8), classes=1, channels=(4,), strides=(2,))


def _bags() -> tuple[torch.Tensor, torch.Tensor]:
    """4 slides of K = 2 random 8 x 8 patches ``(4, 6, 8, 8)`` uint8, labels 0, 1, 0, 1."""
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (4, 6, 8, 8), generator=g, dtype=torch.uint8), torch.tensor([0.0, 1.0, 0.0, 1.0])


def _fit(optimizer_of, round_index: int = 0, rounds: int = 1) -> tuple[TopKSlideClassifier, dict, dict]:
    """θ2's weights after ``reset`` (the round's start) and after ``rounds`` fits of ``round_index``."""
    net = _theta2()
    clf = TopKSlideClassifier(net, k=2, epochs=2, batch_size=2, seed=1, optimizer=optimizer_of(net), augment=False)
    clf.reset()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    for _ in range(rounds):
        clf.fit(*_bags(), round_index=round_index)
    return clf, start, {k: v.clone() for k, v in net.state_dict().items()}


def test_stage2_trains_with_the_given_optimizer():
    clf, start, end = _fit(lambda net: torch.optim.SGD(net.parameters(), lr=0.0))
    assert isinstance(clf.optimizer, torch.optim.SGD)
    assert all(torch.equal(start[k], end[k]) for k in start)  # lr 0: θ2 did not move
    _, start, end = _fit(lambda net: torch.optim.Adam(net.parameters(), lr=0.01))
    assert not all(torch.equal(start[k], end[k]) for k in start)
    with pytest.raises(ValueError, match="stage-2 network's parameters"):
        TopKSlideClassifier(_theta2(), optimizer=torch.optim.Adam(_theta2().parameters()))


def test_stage2_default_optimizer_is_adam_with_pytorch_defaults():
    clf = TopKSlideClassifier(_theta2())
    assert type(clf.optimizer) is torch.optim.Adam
    assert clf.optimizer.defaults == torch.optim.Adam(_theta2().parameters()).defaults
    assert clf.optimizer.defaults["lr"] == 1e-3


def test_stage2_optimizer_restarts_every_round():
    # A second fit of the same round from the same start gives the same weights only if the Adam moments
    # (and step counts) of the first fit are gone; a fresh classifier (a resumed run) gives them too.
    adam = lambda net: torch.optim.Adam(net.parameters(), lr=0.01)  # noqa: E731
    clf, _, twice = _fit(adam, round_index=2, rounds=2)
    _, _, once = _fit(adam, round_index=2)
    assert all(torch.equal(twice[k], once[k]) for k in once)
    steps = [int(state["step"]) for state in clf.optimizer.state.values()]
    assert steps and set(steps) == {2 * 2}  # 2 epochs x 2 batches: the last fit's steps only
    assert set(clf.state_dict()) == set(clf.network.state_dict())  # the checkpoint holds θ2's weights only


def test_bundle_config_builds_the_stage2_optimizer_on_the_stage2_network():
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser["rounds#predictor"] = None  # θ1 and the datalist are not needed to build θ2's trainer
    parser["rounds#validation_slides"] = []
    parser["stage2_learning_rate"] = 0.02
    clf = parser.get_parsed_content("rounds#stage2#classifier")
    assert type(clf.optimizer) is torch.optim.Adam and clf.optimizer.defaults["lr"] == 0.02
    assert clf.network is parser.get_parsed_content("rounds#stage2#network")
    parser["rounds#stage2#optimizer"] = {
        "_target_": "torch.optim.SGD",
        "params": "$@rounds#stage2#network.parameters()",
        "lr": 0.5,
    }
    parser.parse()  # the config is the place to change it
    assert type(parser.get_parsed_content("rounds#stage2#classifier").optimizer) is torch.optim.SGD
