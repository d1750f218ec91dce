"""LSR's high-resolution labels from labelled tiles: most likely z, blocks, the batch preparation and the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mixsup_monai.data.label_stats import LabelStatsTable
from mixsup_monai.methods.lsr import (
    HIGH_RES_KEY,
    PIXEL_LABELS_KEY,
    HighResPrepareBatch,
    LabelSuperResolutionLoss,
    annotation_blocks,
    most_likely_z,
)

TABLE = LabelStatsTable(
    classes=("background", "tumour"),
    z_values=(0, 1, 2),
    mean=[[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]],
    std=[[0.1, 0.1], [0.1, 0.1], [0.1, 0.1]],
)


def _record(tmp_path, labels: np.ndarray) -> dict:
    Image.fromarray(np.full((*labels.shape, 3), 180, np.uint8)).save(tmp_path / "tile.png")
    Image.fromarray(labels).save(tmp_path / "tile_label.png")
    return {"image": str(tmp_path / "tile.png"), "label": str(tmp_path / "tile_label.png")}


def test_most_likely_z_is_the_row_with_the_closest_mean():
    """Fractions pick the z whose mean is closest (equal stds), returned as the z value, not the row."""
    assert [most_likely_z(np.array(f), TABLE) for f in ([1.0, 0.0], [0.45, 0.55], [0.2, 0.8])] == [0, 1, 2]
    shifted = LabelStatsTable(TABLE.classes, (10, 20, 30), TABLE.mean, TABLE.std)
    assert most_likely_z(np.array([0.6, 0.4]), shifted) == 20


def test_most_likely_z_weighs_the_rows_by_their_std():
    """A wide row wins over a closer narrow one when the fractions are many of its stds away."""
    table = LabelStatsTable(("a", "b"), (0, 1), mean=[[0.5, 0.5], [0.9, 0.1]], std=[[0.3, 0.3], [0.02, 0.02]])
    assert most_likely_z(np.array([0.8, 0.2]), table) == 0
    assert most_likely_z(np.array([0.9, 0.1]), table) == 1


def test_blocks_are_cut_at_the_network_resolution_with_their_z(tmp_path):
    """16 px blocks at 4 µm/px are 64 px of a 1 µm/px tile; each gets the z of its labelled fractions."""
    labels = np.full((64, 192), 255, np.uint8)
    labels[:, :64] = 0  # block 0: all background -> z 0
    labels[:, 64:96], labels[:, 96:128] = 0, 1  # block 1: half and half -> z 1
    labels[:48, 128:] = 1  # block 2: 3/4 labelled, all tumour -> z 2
    record = _record(tmp_path, labels)
    items = annotation_blocks([record], block_size=16, mpp=4.0, label_stats=TABLE, input_mpp=1.0)
    assert [(item["location"], item["size"]) for item in items] == [([x, 0], [64, 64]) for x in (0, 64, 128)]
    assert [item["label"] for item in items] == [0, 1, 2] and [item["z"] for item in items] == [0, 1, 2]
    for item in items:
        assert item["image"] == record["image"] and item[PIXEL_LABELS_KEY] == record["label"]
        assert item["slide"] == -1 and item["mask_level"] == 0 and item["mpp"] == 1.0 and "mask" not in item
    assert PIXEL_LABELS_KEY == "pixel_labels" and HIGH_RES_KEY == "high_res"


def test_blocks_under_min_labelled_are_dropped(tmp_path):
    """A block labelled on less than ``min_labelled`` of its area is left out."""
    labels = np.full((64, 128), 255, np.uint8)
    labels[:, :64] = 1
    labels[:16, 64:] = 0  # second block: 1/4 labelled
    record = _record(tmp_path, labels)
    assert [i["location"] for i in annotation_blocks([record], 16, 4.0, TABLE, input_mpp=1.0)] == [[0, 0]]
    kept = annotation_blocks([record], 16, 4.0, TABLE, input_mpp=1.0, min_labelled=0.25)
    assert [(i["location"], i["z"]) for i in kept] == [([0, 0], 2), ([64, 0], 0)]


def test_prepare_batch_adds_the_high_res_targets_when_present():
    """Without 'high_res' the batch gives (image, z); with it (image, {'z', 'high_res'})."""
    image, z = torch.rand(2, 3, 8, 8), torch.tensor([0, 2])
    out_image, out_label = HighResPrepareBatch()({"image": image, "label": z})
    assert torch.equal(out_image, image) and torch.equal(out_label, z)
    high_res = torch.full((2, 1, 8, 8), 255, dtype=torch.int64)
    out_image, target = HighResPrepareBatch()({"image": image, "label": z, HIGH_RES_KEY: high_res}, device="cpu")
    assert torch.equal(out_image, image) and set(target) == {"z", "high_res"}
    assert torch.equal(target["z"], z) and torch.equal(target["high_res"], high_res)


def test_loss_reads_the_high_res_target_from_a_mapping():
    """``{'z', 'high_res'}`` as target gives the value of ``high_res_target=``; an all-255 map adds exactly 0."""
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    z = torch.tensor([0, 2])
    high_res = torch.full((2, 1, 4, 4), 255, dtype=torch.int64)
    high_res[0, 0, :2] = 1
    high_res[1, 0, :, :1] = 0
    loss = LabelSuperResolutionLoss(TABLE, formulation="intra", high_res_weight=0.5)
    explicit = loss(logits, z, high_res_target=high_res)
    from_mapping = loss(logits, {"z": z, "high_res": high_res})
    assert torch.equal(from_mapping, explicit) and not torch.isclose(explicit, loss(logits, z))
    unlabelled = torch.full_like(high_res, 255)
    assert torch.equal(loss(logits, {"z": z, "high_res": unlabelled}), loss(logits, z))
    assert torch.equal(loss(logits, {"z": z}), loss(logits, z))


def test_loss_refuses_bad_high_res_labels_from_a_mapping():
    """A mapping's high-res target is checked like ``high_res_target=``."""
    loss = LabelSuperResolutionLoss(TABLE, formulation="intra", high_res_weight=1.0)
    bad = torch.full((1, 1, 4, 4), 255, dtype=torch.int64)
    bad[0, 0, 0, 0] = 5
    with pytest.raises(ValueError, match=r"high_res_target holds labels \[5\]"):
        loss(torch.zeros(1, 2, 4, 4), {"z": torch.tensor([1]), "high_res": bad})
