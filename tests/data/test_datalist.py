"""Tests of the datalist contract: every planted problem is reported, with its slide and key."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mixsup_monai.data.datalist import DatalistError, check_datalist, load_datalist
from mixsup_monai.wsi import write_pyramidal_tiff


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Three small slides (1024 x 768 px, 3 levels) with masks at level 2, and a valid datalist."""
    root = tmp_path_factory.mktemp("cohort")
    (root / "slides").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    slides = []
    for i in range(3):
        rgb = np.full((768, 1024, 3), 235, np.uint8)
        rgb[100:600, 200:900] = rng.integers(120, 200, size=(500, 700, 3), dtype=np.uint8)
        write_pyramidal_tiff(root / f"slides/s{i}.tiff", rgb, mpp=1.0, min_levels=3)
        mask = np.zeros((192, 256), np.uint8)
        mask[50:100, 80:150] = 1
        mask[:5] = 255
        Image.fromarray(mask).save(root / f"masks/s{i}.png")
        slides.append(f"slides/s{i}.tiff")
    datalist = {
        "name": "tiny",
        "task": "mixsup",
        "classes": ["normal", "tumour"],
        "training": [
            {"image": slides[0], "label": 1, "mask": "masks/s0.png", "mask_level": 2, "regions": [[0, 0, 512, 512]]},
            {"image": slides[1], "label": 0},
        ],
        "validation": [],
        "test": [{"image": slides[2], "label": 1, "mask": "masks/s2.png", "mask_level": 2}],
    }
    return root, datalist


def write(root, datalist, name="datalist.json"):
    path = root / name
    path.write_text(json.dumps(datalist))
    return path


def test_valid_datalist_has_no_problems_and_resolves_paths(cohort):
    root, datalist = cohort
    path = write(root, datalist)
    assert check_datalist(path, task="mixsup") == []
    loaded = load_datalist(path, task="mixsup")
    assert loaded["training"][0]["image"] == str((root / "slides/s0.tiff").resolve())
    assert loaded["training"][0]["mask"] == str((root / "masks/s0.png").resolve())


# each case: (description, mutation of the datalist, (key, pattern) expected in the report)
PLANTED = [
    ("missing file", lambda d: d["training"][1].update(image="slides/nope.tiff"), ("image", "does not exist")),
    ("label out of range", lambda d: d["training"][1].update(label=2), ("label", "out of range")),
    ("label not int", lambda d: d["training"][1].update(label="1"), ("label", "integer")),
    ("region outside", lambda d: d["training"][0].update(regions=[[900, 0, 512, 100]]), ("regions[0]", "outside")),
    ("mask level wrong", lambda d: d["test"][0].update(mask_level=1), ("mask", "level 1 is 512 x 384")),
    ("duplicate image", lambda d: d["test"][0].update(image=d["training"][1]["image"]), ("image", "duplicate")),
    ("unknown task", lambda d: d.update(task="seg"), ("task", "expected one of")),
    ("mpp negative", lambda d: d["training"][1].update(mpp=-1), ("mpp", "positive")),
]


@pytest.mark.parametrize("mutate,expected", [p[1:] for p in PLANTED], ids=[p[0] for p in PLANTED])
def test_each_planted_error_is_reported(cohort, mutate, expected):
    root, datalist = cohort
    broken = copy.deepcopy(datalist)
    mutate(broken)
    problems = check_datalist(write(root, broken, "broken.json"))
    key, pattern = expected
    assert any(p.key == key and pattern in p.message for p in problems), [str(p) for p in problems]


def test_all_problems_reported_at_once_with_slide_names(cohort):
    root, datalist = cohort
    broken = copy.deepcopy(datalist)
    broken["training"][1]["label"] = 7
    broken["training"][0]["regions"] = [[2000, 0, 10, 10]]
    path = write(root, broken, "broken2.json")
    with pytest.raises(DatalistError, match=r"2 problem\(s\)") as err:
        load_datalist(path)
    text = str(err.value)
    assert "training[1] (" in text and "s1.tiff" in text and "slide label 7 out of range" in text
    assert "training[0]" in text and "outside the slide" in text


def test_unreadable_slide_is_reported(cohort):
    root, datalist = cohort
    (root / "slides/garbage.tiff").write_bytes(b"not a tiff at all" * 10)
    broken = copy.deepcopy(datalist)
    broken["training"][1]["image"] = "slides/garbage.tiff"
    problems = check_datalist(write(root, broken, "broken3.json"))
    assert any(p.key == "image" and "unreadable slide" in p.message for p in problems)


def test_proportions_and_blocks(cohort):
    root, datalist = cohort
    npl = {
        "name": "npl",
        "task": "npl",
        "classes": ["non-cancer", "a", "b"],
        "training": [
            {"image": datalist["training"][0]["image"], "mask": "masks/s0.png", "mask_level": 2},
            {"image": datalist["training"][1]["image"], "proportions": {"a": 0.7, "b": 0.2}},
            {"image": datalist["test"][0]["image"], "proportions": {"a": 0.5, "c": 0.5}},
        ],
    }
    problems = check_datalist(write(root, npl, "npl.json"), task="npl")
    messages = {(p.where, p.key): p.message for p in problems}
    assert "sum to 0.9000" in messages[("training[1]", "proportions")]
    assert "not in classes" in messages[("training[2]", "proportions.c")]

    lsr = {
        "name": "lsr",
        "task": "lsr",
        "classes": ["non-tumour", "tumour"],
        "training": [
            {
                "image": datalist["training"][0]["image"],
                "blocks": [
                    {"location": [0, 0], "size": [256, 256], "z": 1},
                    {"location": [900, 700], "size": [256, 256], "z": 1},
                    {"location": [0, 0], "size": [256, 256], "z": 0.5},
                ],
            },
        ],
    }
    problems = check_datalist(write(root, lsr, "lsr.json"), task="lsr")
    keys = {p.key: p.message for p in problems}
    assert "outside the slide (1024 x 768 px" in keys["blocks[1]"]
    assert "integer" in keys["blocks[2].z"]
    assert "blocks[0]" not in keys


def test_task_requirements(cohort):
    root, datalist = cohort
    only_positive = copy.deepcopy(datalist)
    only_positive["training"] = [only_positive["training"][0]]
    problems = check_datalist(write(root, only_positive, "pos.json"), task="mixsup")
    assert any("no negative" in str(p) or "negative training slides" in p.message for p in problems)


def test_cli_exit_code_and_report(cohort):
    root, datalist = cohort
    good = write(root, datalist, "good.json")
    broken = copy.deepcopy(datalist)
    broken["training"][1]["label"] = 3
    bad = write(root, broken, "bad.json")
    ok = subprocess.run(
        [sys.executable, "-m", "mixsup_monai", "check-datalist", str(good)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    fail = subprocess.run(
        [sys.executable, "-m", "mixsup_monai", "check-datalist", str(bad)], capture_output=True, text=True
    )
    assert fail.returncode == 1
    assert "slide label 3 out of range" in fail.stdout
