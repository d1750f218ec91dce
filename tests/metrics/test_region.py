"""Region metrics of NPL (Tokunaga et al., Eq. 7) and the proportion error, on hand-counted patches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mixsup_monai.metrics.region import RegionMetric, proportion_error, region_counts, region_metrics

# 8 patches, 3 classes, one unknown (255) that must not count
PRED = np.array([0, 0, 1, 1, 1, 2, 0, 2])
TRUTH = np.array([0, 1, 1, 1, 2, 255, 0, 0])
# class 0: TP 2 (0, 6), FP 1 (1), FN 1 (7); class 1: TP 2, FP 1 (4), FN 1 (1); class 2: TP 0, FP 1 (7), FN 1 (4)
COUNTS = [[2, 2, 0], [1, 1, 1], [1, 1, 1]]


def test_counts_exclude_unknown():
    assert region_counts(PRED, TRUTH, 3).tolist() == COUNTS


def test_op_pc_miou():
    m = region_metrics(np.array(COUNTS), ["a", "b", "c"])
    assert m["op"] == pytest.approx(4 / 7)
    assert m["pc"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert m["miou"] == pytest.approx((2 / 4 + 2 / 4 + 0) / 3)
    assert m["iou"] == {"a": 0.5, "b": 0.5, "c": 0.0}


def test_class_absent_everywhere_is_not_averaged():
    m = region_metrics(np.array([[3, 0, 0], [0, 0, 0], [0, 0, 0]]))
    assert m["miou"] == 1.0 and m["classes_scored"] == 1 and math.isnan(m["iou"]["1"])


def test_cumulative_metric_matches_counts():
    metric = RegionMetric(num_classes=3, metric="miou")
    scores = torch.nn.functional.one_hot(torch.as_tensor(PRED), 3).float()
    metric(scores[:4], torch.as_tensor(TRUTH[:4]).unsqueeze(1))
    metric(scores[4:], torch.as_tensor(TRUTH[4:]).unsqueeze(1))
    assert float(metric.aggregate()) == pytest.approx(1 / 3)


SAE = [
    ("mapping_missing_class_is_zero", {"a": 0.5, "b": 0.5}, {"a": 0.5, "c": 0.5}, 1.0),
    ("renormalised_counts", [2, 2], [0.5, 0.5], 0.0),
    ("small", [0.6, 0.4], [0.5, 0.5], 0.2),
]


@pytest.mark.parametrize("name, pred, true, expected", SAE, ids=[c[0] for c in SAE])
def test_proportion_error(name, pred, true, expected):
    assert proportion_error(pred, true) == pytest.approx(expected)


def test_proportion_error_rejects_mixed_types():
    with pytest.raises(TypeError, match="both be mappings"):
        proportion_error({"a": 1.0}, [1.0])
