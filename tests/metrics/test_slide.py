"""Tests of the slide-level metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixsup_monai.metrics.slide import (
    quadratic_weighted_kappa,
    roc_auc,
    roc_points,
    save_roc_png,
    sensitivity_specificity,
    slide_classification_metrics,
    specificity_at_sensitivity,
)

# 3 positive, 4 negative slides. Lowest positive score 0.6: negatives 0.1, 0.3 < 0.6, 0.6 (tie) and 0.8 >= 0.6
LABELS = [1, 1, 1, 0, 0, 0, 0]
SCORES = [0.9, 0.6, 0.7, 0.1, 0.3, 0.6, 0.8]


def test_specificity_at_100_percent_sensitivity_hand_computed():
    spec, threshold = specificity_at_sensitivity(LABELS, SCORES, 1.0)
    assert threshold == 0.6 and spec == pytest.approx(2 / 4)  # the tie at 0.6 counts against the method


def test_specificity_at_lower_sensitivity():
    # 2 of 3 positives (ceil(0.66 * 3) = 2): threshold 0.7; negatives below 0.7: 0.1, 0.3, 0.6
    spec, threshold = specificity_at_sensitivity(LABELS, SCORES, 0.66)
    assert threshold == 0.7 and spec == pytest.approx(3 / 4)


def test_auc_hand_computed():
    # positive-negative pairs ranked correctly: 0.9 beats 4; 0.7 beats 3; 0.6 beats 2, ties 1 -> (4 + 3 + 2.5) / 12
    assert roc_auc(LABELS, SCORES) == pytest.approx(9.5 / 12)
    fpr, tpr, _ = roc_points(LABELS, SCORES)
    assert fpr[-1] == 1.0 and tpr[-1] == 1.0


def test_sensitivity_specificity_at_threshold():
    sens, spec = sensitivity_specificity(LABELS, SCORES, 0.65)
    assert sens == pytest.approx(2 / 3) and spec == pytest.approx(3 / 4)


def test_all_metrics_together_and_one_class_gives_nan():
    m = slide_classification_metrics(LABELS, SCORES, threshold=0.5)
    assert m["n_positive"] == 3 and m["n_negative"] == 4 and m["accuracy"] == pytest.approx(5 / 7)
    assert m["spec_at_100_sens"] == pytest.approx(0.5) and m["auc"] == pytest.approx(9.5 / 12)
    only_pos = slide_classification_metrics([1, 1], [0.2, 0.9])
    assert math.isnan(only_pos["auc"]) and only_pos["sensitivity"] == 0.5 and math.isnan(only_pos["specificity"])


@pytest.mark.parametrize(
    "labels,scores,match",
    [
        ([0, 2], [0.1, 0.2], r"slide labels must be 0 \(negative\) or 1 \(positive\), got values \[0, 2\]"),
        ([0, 1], [0.1], "same length"),
        ([0, 1], [0.1, float("nan")], "finite"),
        ([], [], "no slides"),
    ],
    ids=["label_2", "length", "nan", "empty"],
)
def test_rejects_bad_input(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        slide_classification_metrics(labels, scores)


def test_auc_needs_both_classes():
    with pytest.raises(ValueError, match="needs positive and negative slides, got only label 0"):
        roc_auc([0, 0], [0.1, 0.2])


def test_quadratic_weighted_kappa_hand_computed():
    # 3 classes: O = [[1,0,0],[0,1,1],[0,0,1]], E = outer(row sums, column sums) / N, w_ij = (i - j)^2 / 4;
    # sum(w * O) = 0.25 and sum(w * E) = 1.25, so kappa = 1 - 0.25 / 1.25 = 0.8
    t, p = [0, 1, 1, 2], [0, 1, 2, 2]
    observed = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1]], float)
    expected = np.outer(observed.sum(1), observed.sum(0)) / 4
    w = np.array([[(i - j) ** 2 / 4 for j in range(3)] for i in range(3)])
    assert quadratic_weighted_kappa(t, p) == pytest.approx(1 - (w * observed).sum() / (w * expected).sum())
    assert quadratic_weighted_kappa(t, p) == pytest.approx(0.8)
    assert quadratic_weighted_kappa([0, 1, 2], [0, 1, 2]) == 1.0
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 50), rng.integers(0, 5, 50)
    assert quadratic_weighted_kappa(a, b, 5) == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"))


def test_kappa_rejects_classes_out_of_range():
    with pytest.raises(ValueError, match="classes must lie in 0..1"):
        quadratic_weighted_kappa([0, 2], [0, 1], num_classes=2)


def test_roc_png_is_written(tmp_path):
    path = save_roc_png(LABELS, SCORES, tmp_path / "roc.png")
    assert path.is_file() and path.stat().st_size > 1000
