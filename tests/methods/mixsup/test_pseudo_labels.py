"""Tests of the MixSup pseudo-label transforms (threshold T, re-weighting V, hard negatives)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from mixsup_monai.methods.mixsup import (
    MixSupPseudoLabel,
    MixSupPseudoLabelD,
    MixSupPseudoLabeld,
    MixSupPseudoLabelDict,
    MixSupPseudoLabelStats,
    mixsup_pseudo_label_stats,
    mixsup_pseudo_labels,
)

# (name, probability map, slide label, expected label or None), T = 0.4, V = 4, min 0.01
ARRAY_CASES = [
    # 0.1*4 = 0.4; 0.3*4 = 1.2 -> 1; 0.002*4 = 0.008 < 0.01 -> 0; 0.5*4 -> 1
    ("positive_slide_rescaled_and_clipped", [[0.1, 0.3], [0.002, 0.5]], 1, [[0.4, 1.0], [0.0, 1.0]]),
    # 0.0025*4 = 0.01 exactly: not < 0.01, so it stays
    ("scaled_value_at_min_value_kept", [[0.0025, 0.45], [0.0, 0.05]], 1, [[0.01, 1.0], [0.0, 0.2]]),
    ("negative_slide_hard_negative_all_zero", [[0.1, 0.6], [0.9, 0.0]], 0, [[0.0, 0.0], [0.0, 0.0]]),
    ("max_exactly_threshold_is_kept", [[0.4, 0.1], [0.0, 0.2]], 1, [[1.0, 0.4], [0.0, 0.8]]),
    ("positive_slide_below_threshold_dropped", [[0.39, 0.1], [0.0, 0.2]], 1, None),
    ("negative_slide_below_threshold_dropped", [[0.39, 0.1], [0.0, 0.2]], 0, None),
]


@pytest.mark.parametrize("name,probs,slide_label,expected", ARRAY_CASES, ids=[c[0] for c in ARRAY_CASES])
def test_array_transform_hand_computed(name, probs, slide_label, expected):
    out = MixSupPseudoLabel()(np.asarray(probs, dtype=np.float64), slide_label)
    if expected is None:
        assert out is None
    else:
        assert isinstance(out, np.ndarray)
        np.testing.assert_allclose(out, np.asarray(expected), rtol=0, atol=1e-12)


def test_array_transform_keeps_type_and_shape():
    probs = torch.tensor([[[0.1, 0.5]]])  # (1, H, W)
    out = MixSupPseudoLabel()(probs, torch.tensor(1))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1, 2)
    torch.testing.assert_close(out, torch.tensor([[[0.4, 1.0]]]))
    meta = MetaTensor(probs, meta={"location": [0, 512]})
    out_meta = MixSupPseudoLabel()(meta, 1)
    assert isinstance(out_meta, MetaTensor) and out_meta.meta["location"] == [0, 512]


def test_custom_threshold_scale_min_value():
    # T = 0.8 keeps max 0.8; V = 2: 0.8 -> 1, 0.3 -> 0.6, 0.02 -> 0.04 < 0.05 -> 0
    out = MixSupPseudoLabel(threshold=0.8, scale=2.0, min_value=0.05)(np.array([[0.8, 0.3, 0.02]]), 1)
    np.testing.assert_allclose(out, [[1.0, 0.6, 0.0]])


def test_batch_function_labels_and_keep():
    probs = torch.tensor(
        [
            [[[0.2, 0.6], [0.001, 0.05]]],  # positive slide, kept
            [[[0.2, 0.6], [0.001, 0.05]]],  # negative slide, kept -> zeros
            [[[0.2, 0.3], [0.001, 0.05]]],  # positive slide, dropped (max 0.3)
        ],
        dtype=torch.float64,
    )
    labels, keep = mixsup_pseudo_labels(probs, torch.tensor([1, 0, 1]))
    expected = torch.tensor(
        [[[[0.8, 1.0], [0.0, 0.2]]], [[[0.0, 0.0], [0.0, 0.0]]], [[[0.8, 1.0], [0.0, 0.2]]]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(labels, expected)
    assert keep.tolist() == [True, True, False]


BAD_INPUT_CASES = [
    ("threshold_above_one", dict(threshold=1.5), r"threshold T must lie in \[0, 1\].*1\.5"),
    ("threshold_negative", dict(threshold=-0.1), r"threshold T must lie in \[0, 1\]"),
    ("scale_not_positive", dict(scale=0.0), r"scale V must be > 0"),
    ("min_value_above_one", dict(min_value=2.0), r"min_value must lie in \[0, 1\]"),
]


@pytest.mark.parametrize("name,kwargs,match", BAD_INPUT_CASES, ids=[c[0] for c in BAD_INPUT_CASES])
def test_rejects_bad_parameters(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MixSupPseudoLabel(**kwargs)
    with pytest.raises(ValueError, match=match):
        mixsup_pseudo_labels(torch.zeros(1, 1, 2, 2), [0], **kwargs)


@pytest.mark.parametrize("label", [2, -1, 0.5])
def test_rejects_slide_label_not_binary(label):
    with pytest.raises(ValueError, match=r"slide labels must be 0 \(negative\) or 1 \(positive\)"):
        MixSupPseudoLabel()(np.full((2, 2), 0.5), label)


def test_rejects_wrong_shapes_and_logits():
    with pytest.raises(ValueError, match=r"one foreground channel.*\(2, 2, 4, 4\)"):
        mixsup_pseudo_labels(torch.zeros(2, 2, 4, 4), [0, 1])
    with pytest.raises(ValueError, match=r"one entry per patch: expected 2, got 3"):
        mixsup_pseudo_labels(torch.zeros(2, 1, 4, 4), [0, 1, 1])
    with pytest.raises(ValueError, match=r"\(1, H, W\) or \(H, W\).*\(3, 4, 4\)"):
        MixSupPseudoLabel()(torch.zeros(3, 4, 4), 1)
    with pytest.raises(ValueError, match=r"apply a sigmoid to logits first.*\[-2, 3\]"):
        MixSupPseudoLabel()(torch.tensor([[-2.0, 3.0]]), 1)


def test_dict_transform_writes_label_and_keep():
    data = {"pred": torch.tensor([[[0.1, 0.5]]]), "label": 1, "image": "untouched"}
    out = MixSupPseudoLabeld()(data)
    torch.testing.assert_close(out["pseudo_label"], torch.tensor([[[0.4, 1.0]]]))
    assert out["keep"] is True and out["image"] == "untouched"
    assert "pseudo_label" not in data  # input not mutated
    dropped = MixSupPseudoLabeld()({"pred": torch.tensor([[[0.1, 0.3]]]), "label": 0})
    assert dropped["keep"] is False
    torch.testing.assert_close(dropped["pseudo_label"], torch.zeros(1, 1, 2))


def test_dict_transform_options_and_aliases():
    assert MixSupPseudoLabelD is MixSupPseudoLabeld and MixSupPseudoLabelDict is MixSupPseudoLabeld
    t = MixSupPseudoLabeld(
        keys=("a", "b"), slide_label_key="y", output_key=("la", "lb"), keep_key=("ka", "kb"), threshold=0.6
    )
    out = t({"a": np.array([[0.5]]), "b": np.array([[0.7]]), "y": 1})
    assert out["ka"] is False and out["kb"] is True
    np.testing.assert_allclose(out["lb"], [[1.0]])
    with pytest.raises(ValueError, match="output_key must name one distinct output per key"):
        MixSupPseudoLabeld(keys=("a", "b"), keep_key=("ka", "kb"))
    with pytest.raises(KeyError, match="slide label key 'label' is missing"):
        MixSupPseudoLabeld()({"pred": np.zeros((2, 2))})
    out = MixSupPseudoLabeld(
        keys=("pred", "other"), output_key=("p", "o"), keep_key=("k", "ko"), allow_missing_keys=True
    )({"pred": np.full((2, 2), 0.5), "label": 0})
    assert "o" not in out and out["k"] is True


def test_statistics_hand_counted_and_additive():
    probs = torch.tensor(
        [
            [[[0.2, 0.6], [0.001, 0.05]]],  # positive, kept: labels 0.8, 1, 0, 0.2
            [[[0.1, 0.9], [0.0, 0.0]]],  # negative, kept: hard negative
            [[[0.2, 0.3], [0.001, 0.05]]],  # positive, dropped
            [[[0.1, 0.1], [0.1, 0.1]]],  # negative, dropped
        ]
    )
    slide = torch.tensor([1, 0, 1, 0])
    labels, keep = mixsup_pseudo_labels(probs, slide)
    stats = mixsup_pseudo_label_stats(labels, keep, slide)
    assert (stats.patches, stats.kept, stats.dropped) == (4, 2, 2)
    assert (stats.kept_positive, stats.hard_negatives) == (1, 1)
    assert (stats.dropped_positive, stats.dropped_negative) == (1, 1)
    logged = stats.as_dict(prefix="round1/")
    assert logged["round1/positive_pixel_fraction"] == pytest.approx(0.5)  # 0.8 and 1.0 of 4 pixels
    assert logged["round1/nonzero_pixel_fraction"] == pytest.approx(0.75)
    assert logged["round1/mean_positive_label"] == pytest.approx(0.5)  # (0.8 + 1 + 0 + 0.2) / 4
    assert logged["round1/dropped_fraction"] == pytest.approx(0.5)
    halves = mixsup_pseudo_label_stats(labels[:2], keep[:2], slide[:2]) + mixsup_pseudo_label_stats(
        labels[2:], keep[2:], slide[2:]
    )
    assert halves == stats
    assert MixSupPseudoLabelStats().as_dict()["positive_pixel_fraction"] == 0.0
