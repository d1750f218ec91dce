"""Reading blocks and whole slides as tensors, with their label-map crops and optional context."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mixsup_monai.inferers import CenterCropInferer
from mixsup_monai.transforms import LoadSlided, LoadSlideRegiond
from mixsup_monai.wsi import crop_label_map, write_pyramidal_tiff


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """1024 x 768 slide (level 0, 1 µm/px) of smooth colour gradients + a label map at level 2."""
    root = tmp_path_factory.mktemp("slide_io")
    yy, xx = np.mgrid[0:768, 0:1024]
    rgb = np.stack([xx * 255 // 1023, yy * 255 // 767, (xx + yy) * 255 // 1790], -1).astype(np.uint8)
    write_pyramidal_tiff(root / "s.tiff", rgb, mpp=1.0, compression="zlib")
    labels = np.zeros((192, 256), np.uint8)
    labels[:, 128:] = 1
    labels[:10] = 255
    Image.fromarray(labels).save(root / "m.png")
    return {"image": str(root / "s.tiff"), "mask": str(root / "m.png"), "mask_level": 2}


def test_block_is_read_resized_with_its_label_crop(slide):
    item = {**slide, "location": [448, 256], "size": [128, 128]}
    out = LoadSlideRegiond(out_size=(32, 32), mask_key="mask")(item)
    assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.float32
    assert float(out["image"].min()) >= 0.0 and float(out["image"].max()) <= 1.0
    # red grows with x: the block's left half (x < 512) has less red than its right half
    assert out["image"][0, :, :16].mean() < out["image"][0, :, 16:].mean()
    labels = out["label_map"][0]
    assert labels.shape == (32, 32) and (labels[:, :16] == 0).all() and (labels[:, 16:] == 1).all()


def test_context_surrounds_the_same_block(slide):
    item = {**slide, "location": [256, 256], "size": [256, 256]}
    plain = LoadSlideRegiond(out_size=(64, 64))(item)["image"]
    with_context = LoadSlideRegiond(out_size=(64, 64), context=16)(item)["image"]
    assert with_context.shape == (3, 96, 96)
    assert torch.allclose(with_context[:, 16:-16, 16:-16], plain, atol=2 / 255)
    cropped = CenterCropInferer(margin=16)(with_context[None], lambda x: x)
    assert cropped.shape == (1, 3, 64, 64)


def test_whole_slide_and_label_on_the_same_grid(slide):
    out = LoadSlided(downsample=4.0, mask_key="mask")(dict(slide))
    assert out["image"].shape == (3, 192, 256) and out["label"].shape == (1, 192, 256)
    assert (out["label"][0, 20:, :128] == 0).all() and (out["label"][0, 20:, 128:] == 1).all()
    assert out["slide_path"] == slide["image"] and out["downsample"] == 4.0


def test_crop_outside_the_label_map_is_ignore():
    labels = np.ones((4, 4), np.uint8)
    crop = crop_label_map(labels, downsample=4.0, location=(8, 8), size=(16, 16), out_size=(4, 4))
    assert (crop[:2, :2] == 1).all() and (crop[2:, :] == 255).all() and (crop[:, 2:] == 255).all()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="context must be >= 0"):
        LoadSlideRegiond(out_size=(64, 64), context=-1)
    with pytest.raises(ValueError, match="too small for a margin of 40"):
        CenterCropInferer(margin=40)(torch.zeros(1, 2, 64, 64), lambda x: x)


def test_item_without_mask_gets_a_missing_mask_value_map(slide):
    """Items without a mask get a full (1, H, W) int64 map of ``missing_mask_value``, else no label key."""
    item = {"image": slide["image"], "location": [0, 0], "size": [128, 128]}
    out = LoadSlideRegiond(out_size=(16, 24), mask_key="mask", missing_mask_value=255)(item)
    assert out["image"].shape == (3, 24, 16)
    assert out["label_map"].shape == (1, 24, 16) and out["label_map"].dtype == torch.int64
    assert (out["label_map"] == 255).all()
    zeros = LoadSlideRegiond(out_size=(16, 24), mask_key="mask", missing_mask_value=0)({**item, "mask": None})
    assert zeros["label_map"].shape == (1, 24, 16) and (zeros["label_map"] == 0).all()
    assert "label_map" not in LoadSlideRegiond(out_size=(16, 24), mask_key="mask")(item)
    with_mask = LoadSlideRegiond(out_size=(16, 16), mask_key="mask", missing_mask_value=7)({**slide, **item})
    assert set(torch.unique(with_mask["label_map"]).tolist()) == {0, 255}


def test_label_covers_the_box_without_the_context(slide):
    """With context the image grows by the margin but the label stays the box's labels at ``out_size``."""
    item = {**slide, "location": [448, 256], "size": [128, 128]}
    plain = LoadSlideRegiond(out_size=(16, 16), mask_key="mask")(item)
    out = LoadSlideRegiond(out_size=(16, 16), mask_key="mask", context=8)(item)
    assert out["image"].shape == (3, 32, 32) and out["label_map"].shape == (1, 16, 16)
    expected = crop_label_map(np.asarray(Image.open(slide["mask"])), 4.0, (448, 256), (128, 128), (16, 16))
    np.testing.assert_array_equal(out["label_map"][0].numpy(), expected)
    assert torch.equal(out["label_map"], plain["label_map"])
    assert (out["label_map"][0, :, :8] == 0).all() and (out["label_map"][0, :, 8:] == 1).all()
    assert torch.allclose(out["image"][:, 8:-8, 8:-8], plain["image"], atol=2 / 255)


def test_whole_slide_uses_the_item_own_downsample(slide):
    """An item's ``downsample`` overrides the transform's, for the image, the label and the recorded value."""
    out = LoadSlided(downsample=4.0, mask_key="mask")({**slide, "downsample": 8.0})
    assert out["image"].shape == (3, 96, 128) and out["label"].shape == (1, 96, 128)
    assert out["downsample"] == 8.0
    assert (out["label"][0, 5:, :64] == 0).all() and (out["label"][0, 5:, 64:] == 1).all()
    assert (out["label"][0, :5] == 255).all()
