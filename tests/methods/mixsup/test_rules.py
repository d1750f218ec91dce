"""Tests of the pseudo-label rules on hand-made slide predictions (MixSup E-step, top-k MIL)."""

from __future__ import annotations

import numpy as np
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


def _random_slide(index: int, label: int, n: int) -> SlidePrediction:
    g = torch.Generator().manual_seed(index)
    maps = (torch.rand(n, 6, 6, generator=g) ** 2).tolist()  # many patches below T = 0.4, many above
    return _pred(label, maps, f"slide{index}")


@pytest.mark.parametrize("chunk", [2**24, 3 * 36], ids=["one_chunk", "chunks_of_3_patches"])
def test_mixsup_rule_written_slide_by_slide_gives_the_in_memory_targets(tmp_path, monkeypatch, chunk):
    from mixsup_monai.rounds import PseudoLabelStore

    monkeypatch.setattr(MixSupRule, "CHUNK_VALUES", chunk)
    slides = [_random_slide(i, i % 2, n=7 + i) for i in range(5)]
    rule = MixSupRule()
    monkeypatch.setattr(MixSupRule, "CHUNK_VALUES", 2**24)
    in_memory = rule(slides, round_index=1)  # the reference: one chunk per slide, nothing on disk
    monkeypatch.setattr(MixSupRule, "CHUNK_VALUES", chunk)
    store = PseudoLabelStore(tmp_path)
    with store.open_round(1) as sink:
        store.save(rule(slides, round_index=1, labels=sink))
    stored = store.load(1)
    assert stored.sizes() == in_memory.sizes() and stored.stats == in_memory.stats
    for name, pool in in_memory.pools.items():
        assert stored.pools[name].items == pool.items
    array = stored.pools["positive"].arrays["label"]
    assert len(array.shards) == (2 if chunk > 10**6 else 3 + 4)  # per positive slide (8 and 10 patches) or 3 patches
    torch.testing.assert_close(  # the training targets: identical, float16 as before
        torch.as_tensor(np.asarray(array)), torch.as_tensor(np.asarray(in_memory.pools["positive"].arrays["label"]))
    )
