"""Tests of the pseudo-label rules on hand-made slide predictions (MixSup E-step, top-k MIL)."""

from __future__ import annotations

import pytest
import torch

from mixsup_monai.methods.mixsup import MixSupRule, TopKMILRule
from mixsup_monai.rounds import SlidePrediction


def _pred(label: int | None, maps: list[list[list[float]]], name: str = "s") -> SlidePrediction:
    probs = torch.tensor(maps, dtype=torch.float32)[:, None]  # (N, 1, H, W)
    items = [
        {"image": f"/x/{name}.tif", "location": [64 * i, 0], "size": [32, 32], "level": 1} for i in range(len(maps))
    ]
    slide = {"image": f"/x/{name}.tif"} if label is None else {"image": f"/x/{name}.tif", "label": label}
    scores = probs.flatten(1).amax(1)
    return SlidePrediction(slide, items, probs, scores, downsample=2.0, slide_size=(512, 512))


POSITIVE = _pred(1, [[[0.1, 0.3], [0.002, 0.5]], [[0.39, 0.1], [0.0, 0.2]]], "pos")  # patch 1 dropped (max < T)
NEGATIVE = _pred(0, [[[0.9, 0.0], [0.0, 0.0]], [[0.1, 0.1], [0.1, 0.1]]], "neg")  # patch 0 kept: hard negative


def test_mixsup_rule_pools_and_labels_hand_computed():
    labels = MixSupRule(threshold=0.4, scale=4.0, min_value=0.01)([POSITIVE, NEGATIVE], round_index=2)
    assert labels.round_index == 2 and labels.sizes() == {"positive": 1, "negative": 1}
    pos = labels.pools["positive"]
    # 0.1*4 = 0.4; 0.3*4 -> 1; 0.002*4 = 0.008 < 0.01 -> 0; 0.5*4 -> 1
    torch.testing.assert_close(
        torch.as_tensor(pos.arrays["label"][0]).float(), torch.tensor([[[0.4, 1.0], [0.0, 1.0]]]), atol=1e-3, rtol=0
    )
    assert pos.items[0] == {"image": "/x/pos.tif", "location": [0, 0], "size": [64, 64], "level": 1, "slide_label": 1}
    neg = labels.pools["negative"]
    assert "label" not in neg.arrays and neg.items[0]["label_fill"] == 0.0 and neg.items[0]["location"] == [0, 0]
    s = labels.stats
    assert (s["pseudo/patches"], s["pseudo/kept"], s["pseudo/dropped"], s["pseudo/hard_negatives"]) == (4, 2, 2, 1)
    assert (s["pseudo/dropped_positive"], s["pseudo/dropped_negative"]) == (1, 1)
    assert s["pseudo/positive_pixel_fraction"] == pytest.approx(0.5)  # 2 of 4 y+ pixels >= 0.5
    assert labels.meta == {"rule": "mixsup", "T": 0.4, "V": 4.0, "min_value": 0.01}


@pytest.mark.parametrize("label", [2, None, "1"], ids=["label_2", "missing", "string"])
def test_mixsup_rule_names_the_slide_with_a_bad_label(label):
    with pytest.raises(ValueError, match=r"slide '/x/bad.tif': key 'label'"):
        MixSupRule()([_pred(label, [[[0.5]]], "bad")], round_index=1)


def test_mixsup_rule_rejects_multi_channel_maps():
    pred = _pred(1, [[[0.5]]])
    pred.outputs = torch.rand(1, 2, 1, 1)
    with pytest.raises(ValueError, match=r"needs \(N, 1, H, W\) probability maps"):
        MixSupRule()([pred], round_index=1)


def test_mixsup_rule_rejects_bad_parameters():
    with pytest.raises(ValueError, match="threshold T must lie in"):
        MixSupRule(threshold=1.5)


def test_top_k_mil_rule_takes_each_slides_best_patches():
    slides = [_pred(1, [[[0.2]], [[0.9]], [[0.5]]], "p"), _pred(0, [[[0.7]], [[0.1]], [[0.3]]], "n")]
    labels = TopKMILRule(k=2)(slides, round_index=1)
    items = labels.pools["mil"].items
    assert [(it["image"][-5:], it["location"][0], it["label_fill"]) for it in items] == [
        ("p.tif", 64, 1.0),
        ("p.tif", 128, 1.0),
        ("n.tif", 0, 0.0),
        ("n.tif", 128, 0.0),
    ]
