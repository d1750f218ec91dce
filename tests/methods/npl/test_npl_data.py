"""NPL data helpers: proportion classes, patch classes from masks, tumour regions, oversampling."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mixsup_monai.methods.npl import (
    known_region_slides,
    oversample_by_class,
    patch_labels,
    proportion_classes,
    tumour_region,
    weak_slides,
)

CLASSES = ["non-cancer", "lepidic", "acinar", "solid"]


def test_proportion_classes_in_class_order_without_non_cancer():
    slides = [{"image": "a", "proportions": {"solid": 0.5, "lepidic": 0.5}}, {"image": "b", "mask": "m.png"}]
    assert proportion_classes(CLASSES, slides) == ["lepidic", "solid"]


def test_proportion_classes_rejects_unknown_class_naming_the_slide():
    with pytest.raises(ValueError, match=r"slide 'w1\.tif': 'proportions' names \['papillary'\]"):
        proportion_classes(CLASSES, [{"image": "w1.tif", "proportions": {"papillary": 1.0}}])
    with pytest.raises(ValueError, match="no slide has 'proportions'"):
        proportion_classes(CLASSES, [{"image": "a"}])


def test_patch_labels_majority_of_known_pixels():
    # label map at downsample 4: 8 x 8 pixels = 32 x 32 level-0 pixels, patches of 16 level-0 pixels (4 x 4)
    m = np.full((8, 8), 255, np.uint8)
    m[:4, :4] = 1  # patch (0, 0): lepidic
    m[:4, 4:] = 2
    m[0, 4:] = 3  # patch (16, 0): 12 acinar, 4 solid -> acinar
    m[4:, :4] = 255  # patch (0, 16): unknown
    m[4, 4:] = 0  # patch (16, 16): 4 known (non-cancer) of 16 -> unknown at min_known 0.5, known at 0.25
    labels = patch_labels(m, 4.0, [[0, 0], [16, 0], [0, 16], [16, 16]], 16, 4)
    assert labels.tolist() == [1, 2, 255, 255]
    assert patch_labels(m, 4.0, [[16, 16]], 16, 4, min_known=0.25).tolist() == [0]


def test_patch_labels_rejects_values_outside_classes():
    with pytest.raises(ValueError, match=r"mask value 7 is not a class index 0..3 or 255"):
        patch_labels(np.full((4, 4), 7, np.uint8), 4.0, [[0, 0]], 16, 4)


def test_oversample_balances_classes_deterministically():
    items = [{"label": 1, "i": 0}, {"label": 1, "i": 1}, {"label": 1, "i": 2}, {"label": 3, "i": 3}]
    out = oversample_by_class(items)
    assert [(it["label"], it["i"]) for it in out] == [(1, 0), (1, 1), (1, 2), (3, 3), (3, 3), (3, 3)]
    assert oversample_by_class([]) == []


def _mask(path, array):
    Image.fromarray(np.asarray(array, np.uint8), mode="L").save(path)
    return str(path)


def test_tumour_region_excludes_glass_and_other_tissue(tmp_path):
    path = _mask(tmp_path / "t.png", [[0, 1, 255], [1, 1, 0]])
    assert tumour_region(path).tolist() == [[False, True, False], [True, True, False]]


class GridStub:
    """A predictor whose tumour grid holds as many patches as the slide's ``n`` (``SlidePatchPredictor.grid``)."""

    patch_size, level, min_tissue_fraction = 64, 1, 0.5

    def grid(self, slide):
        return [range(slide["n"])]


def test_weak_slides_skip_a_slide_without_tumour_patch_by_name(tmp_path, caplog):
    tumour = _mask(tmp_path / "t.png", [[1, 0]])
    slides = [
        {"image": "/d/full.tif", "proportions": {"solid": 1.0}, "tumour_mask": tumour, "n": 3},
        {"image": "/d/no_tumour.tif", "proportions": {"solid": 1.0}, "tumour_mask": tumour, "n": 0},
        {"image": "/d/supervised.tif", "mask": "m.png"},
    ]
    kept = weak_slides(slides, predictor=GridStub())
    assert [s["image"] for s in kept] == ["/d/full.tif"] and kept[0]["tumour_region"].tolist() == [[True, False]]
    assert "'/d/no_tumour.tif' has proportions but no tumour patch" in caplog.text
    with pytest.raises(ValueError, match=r"but no tumour patch of 64 px.*\['/d/no_tumour\.tif'\]"):
        weak_slides(slides, predictor=GridStub(), on_empty="error")


def test_weak_slides_need_a_tumour_outline(tmp_path):
    with pytest.raises(ValueError, match=r"no 'tumour_mask'.*\['/d/w\.tif'\]"):
        weak_slides([{"image": "/d/w.tif", "proportions": {"solid": 1.0}}])


def test_known_region_slides(tmp_path):
    mask = _mask(tmp_path / "m.png", [[255, 2], [0, 255]])
    (out,) = known_region_slides([{"image": "a", "mask": mask, "mask_level": 2, "group": "x"}, {"image": "b"}])
    assert out["known_region"].tolist() == [[False, True], [True, False]] and "group" not in out
    with pytest.raises(ValueError, match="no slide with 'mask' to evaluate"):
        known_region_slides([{"image": "b"}])
