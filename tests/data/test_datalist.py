"""Tests of the datalist contract: every planted problem is reported, with its slide and key."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mixsup_monai.data.datalist import (
    TASK_REQUIREMENTS,
    DatalistError,
    DatalistProblem,
    check_datalist,
    load_datalist,
    requirements_table,
)
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


# -- the task requirements: one declaration, the checker, the README ---------------------------------


def test_readme_datalist_section_holds_exactly_the_requirements_table():
    """README and code cannot drift: the table rows of README's "### Datalist" are requirements_table()."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### Datalist\n", 1)[1].split("\n## ", 1)[0]
    table_lines = [line for line in section.splitlines() if line.startswith("|")]
    assert "\n".join(table_lines) + "\n" == requirements_table()
    # every declared requirement has its row (the renderer cannot silently drop one)
    for requirements in TASK_REQUIREMENTS.values():
        for r in requirements:
            assert r.description.replace("|", "\\|") in requirements_table()


def test_every_task_checks_its_declared_requirements_in_order():
    assert set(TASK_REQUIREMENTS) == {"mixsup", "lsr", "npl"}
    names = {t: [r.name for r in reqs] for t, reqs in TASK_REQUIREMENTS.items()}
    assert names == {
        "mixsup": ["training", "negative_slides", "positive_slides", "pixel_labels"],
        "lsr": ["training", "blocks", "label_stats", "label_stats_rows"],
        "npl": ["training", "mask_slide", "proportions", "tumour_mask"],
    }
    empty = {"task": "npl", "classes": ["a", "b"], "training": [], "test": [{"image": __file__}]}
    assert [(p.key, p.message) for p in check_datalist(empty, open_slides=False)] == [
        ("training", "task 'npl' needs training slides, got none")  # the later requirements are not checked
    ]


def _npl(datalist):
    image = datalist["training"][0]["image"]
    return {
        "name": "npl",
        "task": "npl",
        "classes": ["non-cancer", "a", "b"],
        "training": [
            {"image": image, "mask": "masks/s0.png", "mask_level": 2},
            {
                "image": datalist["training"][1]["image"],
                "proportions": {"a": 0.7, "b": 0.3},
                "tumour_mask": "masks/s1.png",
            },
            {"image": datalist["test"][0]["image"], "proportions": {"a": 0.5, "b": 0.5}},
        ],
        # validation / test slides are scored on their mask: proportions without a tumour outline are fine there
        "validation": [{"image": "slides/v.tiff", "mask": "masks/s2.png", "mask_level": 2, "proportions": {"a": 1.0}}],
    }


def test_npl_slide_with_proportions_needs_a_tumour_mask(cohort):
    root, datalist = cohort
    (root / "slides/v.tiff").write_bytes((root / "slides/s2.tiff").read_bytes())
    npl = _npl(datalist)
    path = write(root, npl, "npl_tumour.json")
    assert check_datalist(path, task="npl", open_slides=False) == [
        DatalistProblem(
            str(path),
            "training[2]",
            "tumour_mask",
            "slide has 'proportions' but no 'tumour_mask' (the tumour outline its proportions refer to): "
            "add a label map 1 = tumour, 0 = other tissue, 255 = glass",
            str(root / "slides/s2.tiff"),
        )
    ]
    with pytest.raises(DatalistError, match=r"training\[2\] \(.*s2\.tiff\) key 'tumour_mask': slide has"):
        load_datalist(path, task="npl", open_slides=False)
    npl["training"][2]["tumour_mask"] = "masks/s2.png"
    assert check_datalist(write(root, npl, "npl_tumour_ok.json"), task="npl", open_slides=False) == []


CLASSES = ["non-tumour", "tumour"]


def _table(**changes):
    table = {
        "classes": list(CLASSES),
        "source": "hand-written",
        "stats": [
            {"z": 0, "mean": [0.9, 0.1], "std": [0.05, 0.05]},
            {"z": 1, "mean": [0.3, 0.7], "std": [0.1, 0.1]},
        ],
    }
    table.update(changes)
    return table


def _lsr(datalist, table_path=None):
    blocks = [{"location": [0, 0], "size": [256, 256], "z": 0}, {"location": [256, 0], "size": [256, 256], "z": 1}]
    data = {
        "name": "lsr",
        "task": "lsr",
        "classes": list(CLASSES),
        "training": [{"image": datalist["training"][0]["image"], "blocks": blocks}],
        "test": [{"image": datalist["test"][0]["image"], "mask": "masks/s2.png", "mask_level": 2, "blocks": blocks}],
    }
    if table_path is not None:
        data["label_stats"] = str(table_path)
    return data


def _lsr_problems(cohort, table, name, edit=None):
    """``(table path, [(where, key, message), ...])`` of an LSR datalist whose ``label_stats`` is ``table``."""
    root, datalist = cohort
    table_path = root / f"{name}.table.json"
    table_path.write_text(json.dumps(table))  # NaN is written as NaN, which Python's JSON reader accepts
    data = _lsr(datalist, table_path)
    if edit is not None:
        edit(data)
    problems = check_datalist(write(root, data, f"{name}.json"), task="lsr", open_slides=False)
    return table_path.resolve(), [(p.where, p.key, p.message) for p in problems]


def test_lsr_valid_table_passes(cohort):
    assert _lsr_problems(cohort, _table(), "lsr_ok")[1] == []


def test_lsr_needs_a_top_level_label_stats(cohort):
    root, datalist = cohort
    path = write(root, _lsr(datalist), "lsr_no_table.json")
    assert [(p.where, p.key, p.message) for p in check_datalist(path, task="lsr", open_slides=False)] == [
        (
            "",
            "label_stats",
            "LSR needs the p(c | z) table: no top-level 'label_stats'; name its JSON file here "
            "(`python -m mixsup_monai lsr-stats` estimates one)",
        )
    ]
    # a table still to be estimated (lsr-stats): everything else is checked
    assert check_datalist(path, task="lsr", without=("label_stats", "label_stats_rows"), open_slides=False) == []
    with pytest.raises(ValueError, match=r"without: unknown requirement\(s\) \['labels_stats'\]"):
        check_datalist(path, task="lsr", without=("labels_stats",))


def test_lsr_table_in_another_layout(cohort):
    table_path, problems = _lsr_problems(cohort, {"0": {"tumour": [0.1, 0.02]}}, "lsr_layout")
    assert problems == [
        (
            "",
            "label_stats",
            f"label-statistics table {str(table_path)!r}: top-level keys ['0'] are not the table layout: expected "
            '{"classes": [...], "source": "...", "stats": [{"z": 0, "mean": [...], "std": [...]}]}',
        )
    ]


def test_lsr_table_unreadable(cohort):
    root, datalist = cohort
    table_path = root / "lsr_bad_json.table.json"
    table_path.write_text('{"classes": [')
    problems = check_datalist(write(root, _lsr(datalist, table_path), "lsr_bad_json.json"), open_slides=False)
    assert [(p.key, p.message.split(" (")[0]) for p in problems] == [
        ("label_stats", f"label-statistics table {str(table_path.resolve())!r}: not valid JSON")
    ]


def test_lsr_table_values_each_reported(cohort):
    stats = [
        {"z": 0, "mean": [float("nan"), 0.1], "std": [0.05, -0.01]},
        {"z": 1, "mean": [0.3, 0.7], "std": [0.1, 5.0]},
    ]
    table_path, problems = _lsr_problems(cohort, _table(stats=stats), "lsr_values")
    name = f"label-statistics table {str(table_path)!r}"
    assert problems == [
        ("", "label_stats", f"{name}: stats[0].mean[0] = nan: expected a fraction in [0, 1]"),
        (
            "",
            "label_stats",
            f"{name}: stats[0].std[1] = -0.01: expected a finite standard deviation >= 0 "
            "(use 0.0 when every block had the same fraction)",
        ),
        (
            "",
            "label_stats",
            f"{name}: stats[1].std[1] = 5.0: expected <= 0.5, the largest possible std of a fraction "
            "(a percentage? divide by 100)",
        ),
    ]


def test_lsr_table_classes_must_be_the_datalists(cohort):
    table_path, problems = _lsr_problems(cohort, _table(classes=["tumour", "non-tumour"]), "lsr_classes")
    assert problems == [
        (
            "",
            "label_stats",
            f"label-statistics table {str(table_path)!r}: classes = ['tumour', 'non-tumour'] do not match the "
            "classes of the datalist ['non-tumour', 'tumour'] (same names, different order: the order is the "
            "network's channel order)",
        )
    ]


def test_lsr_every_block_z_has_a_row(cohort):
    def edit(data):
        data["test"][0]["blocks"] = [
            {"location": [0, 0], "size": [256, 256], "z": 1},
            {**data["test"][0]["blocks"][0], "z": 7},
        ]

    table_path, problems = _lsr_problems(cohort, _table(), "lsr_rows", edit)
    assert problems == [
        (
            "test[0]",
            "blocks[1].z",
            f"z = 7 has no row in the label-statistics table {str(table_path)!r} (its z values are [0, 1]); "
            "add a row for z = 7",
        )
    ]


def test_load_datalist_takes_the_bundles_label_stats_override(cohort, tmp_path, monkeypatch):
    root, datalist = cohort
    path = write(root, _lsr(datalist), "lsr_override.json")
    with pytest.raises(DatalistError, match="no top-level 'label_stats'"):
        load_datalist(path, task="lsr", open_slides=False)
    (tmp_path / "table.json").write_text(json.dumps(_table(stats=_table()["stats"][:1])))
    monkeypatch.chdir(tmp_path)  # the override (a command-line value) is relative to the current folder
    with pytest.raises(DatalistError, match=r"test\[0\] \(.*\) key 'blocks\[1\]\.z': z = 1 has no row"):
        load_datalist(path, task="lsr", open_slides=False, label_stats="table.json")
    (tmp_path / "table.json").write_text(json.dumps(_table()))
    loaded = load_datalist(path, task="lsr", open_slides=False, label_stats="table.json")
    assert loaded["label_stats"] == str((tmp_path / "table.json").resolve())
