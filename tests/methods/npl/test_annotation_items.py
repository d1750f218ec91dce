"""NPL's supervised patches from labelled tiles (MONAI Label's datastore): one class per patch."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mixsup_monai.methods.npl import annotation_class_items
from mixsup_monai.utils.errors import InputError


def _record(tmp_path, labels: np.ndarray) -> dict:
    Image.fromarray(np.full((*labels.shape, 3), 200, np.uint8)).save(tmp_path / "tile.png")
    Image.fromarray(labels).save(tmp_path / "tile_label.png")
    return {"image": str(tmp_path / "tile.png"), "label": str(tmp_path / "tile_label.png")}


def _labels() -> np.ndarray:
    """Four 64 px patches of a 256 x 64 tile: class 2, majority 1 over 3, 3/8 labelled, 5/8 labelled class 0."""
    labels = np.full((64, 256), 255, np.uint8)
    labels[:, :64] = 2
    labels[:, 64:128] = 3
    labels[:40, 64:128] = 1  # 40 rows of class 1, 24 of class 3
    labels[:24, 128:192] = 0  # 3/8 of the patch labelled
    labels[:40, 192:] = 0  # 5/8 of the patch labelled
    return labels


def test_each_patch_gets_the_majority_class_of_its_labelled_pixels(tmp_path):
    """Patches take the majority class of their labelled pixels; those under min_known are dropped."""
    record = _record(tmp_path, _labels())
    items = annotation_class_items([record], patch_size=32, mpp=2.0, num_classes=4, input_mpp=1.0, min_known=0.5)
    assert [(item["location"], item["label"]) for item in items] == [([0, 0], 2), ([64, 0], 1), ([192, 0], 0)]
    for item in items:
        assert set(item) == {"image", "location", "size", "level", "mpp", "label"}
        assert item["image"] == record["image"] and item["size"] == [64, 64] and item["level"] == 0
        assert item["mpp"] == 1.0 and isinstance(item["label"], int)


def test_min_known_sets_the_labelled_share_a_patch_needs(tmp_path):
    """A lower ``min_known`` keeps the patch labelled on 3/8 of its area; a higher one drops the 5/8 one."""
    record = _record(tmp_path, _labels())
    low = annotation_class_items([record], 32, 2.0, 4, input_mpp=1.0, min_known=0.3)
    assert [(item["location"][0], item["label"]) for item in low] == [(0, 2), (64, 1), (128, 0), (192, 0)]
    high = annotation_class_items([record], 32, 2.0, 4, input_mpp=1.0, min_known=0.7)
    assert [(item["location"][0], item["label"]) for item in high] == [(0, 2), (64, 1)]


def test_label_values_beyond_the_classes_are_refused(tmp_path):
    """A label value >= num_classes (other than 255) is an InputError listing it."""
    record = _record(tmp_path, _labels())
    with pytest.raises(InputError, match=r"label values \[3\] are not classes"):
        annotation_class_items([record], 32, 2.0, 3, input_mpp=1.0)
