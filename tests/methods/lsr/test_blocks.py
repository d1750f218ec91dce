"""Block items and the up-sampled block-label map (the LSR low-resolution baseline)."""

from __future__ import annotations

import numpy as np
import pytest

from mixsup_monai.methods.lsr import block_items, block_label_map


def test_block_label_map_paints_each_block_with_its_z_means():
    blocks = [
        {"location": [0, 0], "size": [8, 8], "z": 1},
        {"location": [8, 0], "size": [8, 8], "z": 0},
    ]
    means = {0: np.array([0.9, 0.1]), 1: np.array([0.3, 0.7])}
    out = block_label_map(blocks, means, downsample=4.0, shape=(4, 6))
    assert out.shape == (2, 4, 6)
    np.testing.assert_allclose(out[1, :2, :2], 0.7)  # block 1: 8 px / 4 = 2 output px
    np.testing.assert_allclose(out[1, :2, 2:4], 0.1)
    assert (out[0, 2:, :] == 1).all() and (out[1, 2:, :] == 0).all()  # outside every block: class 0
    assert (out[0, :, 4:] == 1).all() and (out[1, :, 4:] == 0).all()


def test_block_items_carry_z_as_label_and_reject_empty():
    datalist = {
        "training": [
            {
                "image": "/s.tiff",
                "mask": "/m.png",
                "mask_level": 2,
                "blocks": [{"location": [1, 2], "size": [3, 4], "z": 2}],
            }
        ],
        "validation": [{"image": "/t.tiff"}],
    }
    (item,) = block_items(datalist, "training")
    assert item["label"] == item["z"] == 2 and item["location"] == [1, 2] and item["mask_level"] == 2
    with pytest.raises(ValueError, match=r"no blocks in slides of section\(s\) 'validation'"):
        block_items(datalist, "validation")
