"""Tests of the p(c | z) label-statistics table: JSON I/O, validation, estimation from masks and CSV."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from mixsup_monai.methods.lsr.label_stats import (
    LabelStatsTable,
    estimate_label_stats,
    estimate_label_stats_from_csv,
    z_to_row_index,
)

CLASSES = ["non-tumour", "tumour"]


def good_dict():
    return {
        "classes": list(CLASSES),
        "source": "hand-written",
        "stats": [
            {"z": 2, "mean": [0.3, 0.7], "std": [0.05, 0.05], "n_blocks": 12},
            {"z": 0, "mean": [1.0, 0.0], "std": [0.0, 0.0], "n_blocks": 12},
            {"z": 1, "mean": [0.9, 0.1], "std": [0.01, 0.01]},
        ],
    }


def write(tmp_path, data, name="stats.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_load_sorts_rows_and_round_trips(tmp_path):
    table = LabelStatsTable.load(write(tmp_path, good_dict()), classes=CLASSES)
    assert table.z_values == (0, 1, 2)
    np.testing.assert_allclose(table.mean[:, 1], [0.0, 0.1, 0.7])
    assert table.n_blocks == (12, None, 12)
    assert table.index_of(2) == 2
    eta, rho = table.to_tensors()
    assert eta.shape == rho.shape == (3, 2) and eta.dtype == torch.float32
    table.save(tmp_path / "copy" / "stats.json")
    again = LabelStatsTable.load(tmp_path / "copy" / "stats.json")
    np.testing.assert_allclose(again.std, table.std)
    assert again.z_values == table.z_values and again.source == "hand-written"


def test_z_lookup_maps_batches_and_rejects_unknown_z():
    table = LabelStatsTable.from_dict(good_dict())
    rows = table.index_of(torch.tensor([2, 0, 2, 1]))
    assert rows.tolist() == [2, 0, 2, 1]
    with pytest.raises(ValueError, match=r"z = \[4, 9\] have no row .*z values are \[0, 1, 2\]"):
        z_to_row_index(torch.tensor([9, 0, 4]), table.z_tensor())


def _set(path_keys, value):
    def edit(d):
        target = d
        for k in path_keys[:-1]:
            target = target[k]
        target[path_keys[-1]] = value
        return d

    return edit


@pytest.mark.parametrize(
    ("case", "edit", "pattern"),
    [
        (
            "nan_std",
            _set(["stats", 2, "std", 1], float("nan")),
            r"stats\[2\]\.std\[1\] = nan: expected a finite",
        ),
        (
            "negative_std",
            _set(["stats", 0, "std", 0], -0.1),
            r"stats\[0\]\.std\[0\] = -0\.1: expected a finite",
        ),
        (
            "std_in_percent",
            _set(["stats", 0, "std", 0], 5.0),
            r"stats\[0\]\.std\[0\] = 5\.0: expected <= 0\.5",
        ),
        (
            "mean_in_percent",
            _set(["stats", 0, "mean"], [30.0, 70.0]),
            r"stats\[0\]\.mean\[0\] = 30\.0: expected a fraction in \[0, 1\] \(looks like a percentage",
        ),
        (
            "bad_sum",
            _set(["stats", 1, "mean"], [0.5, 0.1]),
            r"stats\[1\]\.mean = \[0\.5, 0\.1\] sums to 0\.6000",
        ),
        (
            "duplicate_z",
            _set(["stats", 2, "z"], 2),
            r"stats\[2\]\.z = 2 appears more than once \(also stats\[0\]\)",
        ),
        ("missing_key", lambda d: d["stats"][1].pop("std") and d, r"stats\[1\] has no 'std' key"),
        (
            "wrong_length",
            _set(["stats", 1, "mean"], [1.0]),
            r"stats\[1\]\.mean = \[1\.0\]: expected a list of 2",
        ),
        ("float_z", _set(["stats", 1, "z"], 1.5), r"stats\[1\]\.z = 1\.5: expected an integer"),
        ("null_value", _set(["stats", 1, "std", 0], None), r"stats\[1\]\.std\[0\] = None: expected a number"),
    ],
)
def test_rejects_bad_table_naming_file_key_and_value(tmp_path, case, edit, pattern):
    path = write(tmp_path, edit(good_dict()), name=f"{case}.json")
    with pytest.raises(ValueError, match=pattern) as info:
        LabelStatsTable.load(path)
    assert f"{case}.json" in str(info.value)


def test_rejects_classes_different_from_the_datalist(tmp_path):
    path = write(tmp_path, good_dict())
    with pytest.raises(ValueError, match=r"same names, different order"):
        LabelStatsTable.load(path, classes=["tumour", "non-tumour"])
    with pytest.raises(ValueError, match=r"do not match the classes of the datalist \['bg', 'tumour'\]"):
        LabelStatsTable.load(path, classes=["bg", "tumour"])


def test_rejects_z_in_data_missing_from_table(tmp_path):
    table = LabelStatsTable.load(write(tmp_path, good_dict()))
    table.validate(z_in_data=[0, 2, 2, 1])
    with pytest.raises(ValueError, match=r"z values \[5, 7\] occur in datalist\.json but have no row"):
        table.validate(z_in_data=[0, 7, 5], source_name="datalist.json")


def test_rejects_malformed_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"classes": ["a", "b"], "stats": [')
    with pytest.raises(ValueError, match=r"broken\.json.*not valid JSON"):
        LabelStatsTable.load(path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        LabelStatsTable.load(tmp_path / "missing.json")


def test_estimates_table_from_masks(caplog):
    samples = [
        (0, np.array([[0, 0], [0, 1]])),  # fractions (3/4, 1/4)
        (0, np.array([[0, 1], [1, 255]])),  # 255 ignored: (1/3, 2/3)
        (3, np.array([[1, 1], [1, 1]])),  # alone in z = 3: std 0 with a warning
        (3, np.full((2, 2), 255)),  # no labelled pixel: skipped
    ]
    with caplog.at_level(logging.WARNING, logger="mixsup_monai.methods.lsr.label_stats"):
        table = estimate_label_stats(samples, CLASSES)
    assert table.z_values == (0, 3) and table.n_blocks == (2, 1)
    np.testing.assert_allclose(table.mean[0], [(0.75 + 1 / 3) / 2, (0.25 + 2 / 3) / 2])
    sample_std = (0.75 - 1 / 3) / math.sqrt(2)  # two values a, b: |a - b| / sqrt(2) with ddof = 1
    np.testing.assert_allclose(table.std[0], [sample_std, sample_std])
    np.testing.assert_allclose(table.mean[1], [0.0, 1.0])
    np.testing.assert_allclose(table.std[1], [0.0, 0.0])
    assert "z = 3 has 1 block(s)" in caplog.text and "no labelled pixel" in caplog.text
    table.validate(z_in_data=[0, 3], classes=CLASSES)


def test_estimate_rejects_labels_outside_classes():
    with pytest.raises(ValueError, match=r"block 1 \(z = 0\): label values \[2\] are outside \[0, 2\)"):
        estimate_label_stats([(0, np.zeros((2, 2))), (0, np.array([[0, 2]]))], CLASSES)


@pytest.mark.parametrize(
    ("case", "text", "percent"),
    [
        ("percentages", "z,non-tumour,tumour,comment\n1,30,70,x\n1,50,50,\n2,100,0,\n2,98,2,\n", None),
        ("fractions", "z,tumour,non-tumour\n1,0.7,0.3\n1,0.5,0.5\n2,0,1\n2,0.02,0.98\n", None),
        ("forced_percent", "z,non-tumour,tumour\n1,30,70\n1,50,50\n2,100,0\n2,98,2\n", True),
    ],
)
def test_estimates_table_from_visual_csv(tmp_path, case, text, percent):
    path = tmp_path / f"{case}.csv"
    path.write_text(text)
    table = estimate_label_stats_from_csv(path, CLASSES, percent=percent)
    assert table.z_values == (1, 2)
    np.testing.assert_allclose(table.mean, [[0.4, 0.6], [0.99, 0.01]])
    s1, s2 = 0.2 / math.sqrt(2), 0.02 / math.sqrt(2)
    np.testing.assert_allclose(table.std, [[s1, s1], [s2, s2]])
    assert f"{case}.csv" in table.source


@pytest.mark.parametrize(
    ("case", "text", "pattern"),
    [
        ("missing_column", "z,tumor\n1,70\n", r"lacks column\(s\) \['non-tumour', 'tumour'\]"),
        ("bad_z", "z,non-tumour,tumour\nhigh,30,70\n", r"line 2: z = 'high': expected an integer"),
        ("bad_value", "z,non-tumour,tumour\n1,30,70\n1,thirty,70\n", r"line 3: non-tumour = 'thirty'"),
        ("bad_sum", "z,non-tumour,tumour\n1,30,60\n", r"line 2: class values \[30\.0, 60\.0\] sum to 90"),
        (
            "negative",
            "z,non-tumour,tumour\n1,-0.1,1.1\n",
            r"line 2: non-tumour = '-0\.1': expected a value >= 0",
        ),
    ],
)
def test_csv_errors_name_file_line_and_value(tmp_path, case, text, pattern):
    path = tmp_path / f"{case}.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern) as info:
        estimate_label_stats_from_csv(path, CLASSES)
    assert f"{case}.csv" in str(info.value)
