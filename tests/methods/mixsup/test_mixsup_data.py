"""Tests of MixSup's pixel-labelled region patches and of the training target transform."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mixsup_monai.data import DatalistError, load_datalist
from mixsup_monai.methods.mixsup import PatchTargetd, region_patch_items

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "rounds"))
from _tiny_cohort import make_cohort  # noqa: E402


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return make_cohort(tmp_path_factory.mktemp("mixsup_data"))


def test_region_is_tiled_with_patches_of_the_patch_level(cohort):
    slides = load_datalist(cohort, task="mixsup")["training"]
    items = region_patch_items(slides, patch_size=32, level=1)
    # region [96, 96, 192, 192]; a 32 px patch at level 1 is 64 px at level 0: x, y in {96, 160, 224}
    assert sorted({tuple(it["location"]) for it in items}) == [(x, y) for x in (96, 160, 224) for y in (96, 160, 224)]
    assert all(it["size"] == [64, 64] and it["level"] == 1 and it["region"] == [96, 96, 192, 192] for it in items)
    assert items[0]["mask"].endswith("train_pos0.png") and items[0]["mask_level"] == 2


def test_a_region_smaller_than_a_patch_gets_one_centred_patch(cohort):
    slide = dict(load_datalist(cohort, task="mixsup")["training"][0], regions=[[200, 200, 20, 30]])
    (item,) = region_patch_items([slide], patch_size=32, level=1)
    assert item["location"] == [200 - 22, 200 - 17]


def test_region_outside_the_slide_names_file_and_key(cohort):
    slide = dict(load_datalist(cohort, task="mixsup")["training"][0], regions=[[0, 0, 64, 64], [480, 480, 64, 64]])
    with pytest.raises(
        ValueError, match=r"data\.json: slide '.*train_pos0\.tif' key 'regions\[1\]'.*outside the slide"
    ):
        region_patch_items([slide], patch_size=32, level=1, datalist_file="data.json")


def test_no_pixel_labelled_regions_is_an_error(cohort):
    slides = [s for s in load_datalist(cohort, task="mixsup")["training"] if "regions" not in s]
    with pytest.raises(ValueError, match="no pixel-labelled regions"):
        region_patch_items(slides, patch_size=32, level=1)


BAD_DATALISTS = [
    ("label_2", lambda d: d["training"][0].update(label=2), r"training\[0\].*key 'label': slide label 2 out of range"),
    (
        "no_negative_slides",
        lambda d: [s.update(label=1) for s in d["training"]],
        "MixSup needs negative training slides",
    ),
    (
        "no_pixel_labels",
        lambda d: [s.pop(k, None) for s in d["training"] for k in ("mask", "mask_level", "regions")],
        "MixSup needs pixel-labelled training slides",
    ),
    (
        "region_outside",
        lambda d: d["training"][0].update(regions=[[400, 400, 200, 200]]),
        r"training\[0\].*key 'regions\[0\]'.*extends outside the slide",
    ),
]


@pytest.mark.parametrize("name,edit,match", BAD_DATALISTS, ids=[c[0] for c in BAD_DATALISTS])
def test_bad_datalists_are_refused_naming_file_and_key(cohort, tmp_path, name, edit, match):
    data = json.loads(cohort.read_text())
    for s in data["training"] + data["validation"] + data["test"]:
        for key in ("image", "mask"):
            if key in s:
                s[key] = str(cohort.parent / s[key])
    edit(data)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DatalistError, match=match) as info:
        load_datalist(path, task="mixsup")
    assert str(path) in str(info.value)


def test_patch_target_from_a_class_map_a_soft_label_and_a_fill_value():
    image = torch.zeros(3, 2, 2)
    t = PatchTargetd(keys="label", foreground=(1,))
    mask = t({"image": image, "label": torch.tensor([[[0, 1], [255, 2]]])})["label"]
    torch.testing.assert_close(mask, torch.tensor([[[0.0, 1.0], [255.0, 0.0]]]))
    soft = t({"image": image, "label": np.full((1, 2, 2), 0.25, np.float16)})["label"]
    assert soft.dtype == torch.float32 and float(soft.max()) == 0.25
    fill = t({"image": image, "label_fill": 0.0})["label"]
    assert fill.shape == (1, 2, 2) and float(fill.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="no 'label' and no 'label_fill'"):
        t({"image": image, "location": [0, 0]})


def test_patch_target_ignores_pixels_outside_the_region():
    # patch at (0, 0) of 4 x 4 level-0 px shown as 2 x 2; region covers x in [0, 2): the right column is ignored
    item = {
        "image": torch.zeros(3, 2, 2),
        "label_fill": 1.0,
        "location": [0, 0],
        "size": [4, 4],
        "region": [0, 0, 2, 4],
    }
    out = PatchTargetd(keys="label")(item)["label"]
    torch.testing.assert_close(out, torch.tensor([[[1.0, 255.0], [1.0, 255.0]]]))
