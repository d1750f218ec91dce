"""Tile inference transforms: a region in (file, slide box, array), a label aligned with it out, and its contours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mixsup_monai.inferers import PatchClassifierInferer
from mixsup_monai.transforms import LoadTiled, MonaiLabelOutputd, TileContoursd, TileLabeld
from mixsup_monai.utils.errors import InputError
from mixsup_monai.wsi.pyramid import write_pyramidal_tiff


def _pattern(height: int = 1024, width: int = 1280) -> tuple[np.ndarray, np.ndarray]:
    """An H&E-pink image with dark purple discs on it, and the discs' mask (the truth a "network" must return)."""
    yy, xx = np.mgrid[:height, :width]
    discs = np.zeros((height, width), bool)
    for cy, cx, r in ((300, 400, 150), (700, 900, 220), (850, 200, 90)):
        discs |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = (230, 170, 200)
    rgb[discs] = (90, 40, 120)
    return rgb, discs


def _darkness(x: torch.Tensor) -> torch.Tensor:
    """A one-channel "network": probability = how dark the pixel is (discs ~0.7, background ~0.2)."""
    return 1.0 - x.mean(dim=1, keepdim=True)


def _label_of(item: dict) -> np.ndarray:
    item = dict(item)
    item["pred"] = _darkness(item["image"][None])[0]
    item = TileLabeld(threshold=0.45, tissue_only=False)(item)
    label = item["pred"]
    assert label.dtype == torch.uint8 and label.shape[0] == 1
    return label[0].numpy()


def test_label_of_a_png_tile_is_aligned_with_the_tile(tmp_path):
    rgb, discs = _pattern()
    Image.fromarray(rgb).save(tmp_path / "tile.png")
    item = LoadTiled(mpp=2.0, input_mpp=0.5)({"image": str(tmp_path / "tile.png")})
    assert tuple(item["image"].shape) == (3, 256, 320)  # 4 tile pixels per network pixel
    label = _label_of(item)
    assert label.shape == discs.shape
    assert (label.astype(bool) == discs).mean() > 0.99  # only the disc edges differ (the 4x round trip)


def test_label_of_a_slide_box_at_a_level_is_aligned_and_its_contours_are_in_level0_pixels(tmp_path):
    rgb, discs = _pattern()
    slide = tmp_path / "slide.tif"
    write_pyramidal_tiff(slide, rgb, mpp=0.5, compression="lzw", min_level_size=128)
    # MONAI Label's /infer/wsi tile: level-0 location, size at the level asked for
    item = LoadTiled(mpp=1.0)({"image": str(slide), "location": [512, 256], "size": [300, 200], "level": 1})
    assert tuple(item["image"].shape) == (3, 200, 300)  # level 1 is 1 um/px already
    label = _label_of(item)
    truth = discs[256 : 256 + 400 : 2, 512 : 512 + 600 : 2]
    assert label.shape == (200, 300) and (label.astype(bool) == truth).mean() > 0.98
    labelled = TileLabeld(threshold=0.45, tissue_only=False)({**item, "pred": _darkness(item["image"][None])[0]})
    annotation = TileContoursd(classes=["background", "nucleus"])(labelled)["result"]["annotation"]
    assert annotation["location"] == [512, 256] and annotation["size"] == [600, 400]
    assert annotation["labels"] == {"nucleus": annotation["labels"]["nucleus"]} and annotation["elements"]
    points = np.array([p for e in annotation["elements"] for ring in e["contours"] for p in ring])
    assert points[:, 0].min() >= 512 and points[:, 0].max() <= 1112 and points[:, 1].min() >= 256
    assert points[:, 1].max() <= 656  # level-0 pixels of the 600 x 400 level-0 box


def test_array_input_and_bad_inputs():
    rgb, discs = _pattern(128, 160)
    item = LoadTiled(mpp=1.0, input_mpp=1.0)({"image": rgb.transpose(2, 0, 1).astype(np.float32) / 255})
    assert tuple(item["image"].shape) == (3, 128, 160) and (_label_of(item).astype(bool) == discs).mean() > 0.99
    with pytest.raises(InputError, match="expected an RGB region"):
        LoadTiled()({"image": np.zeros((4, 4))})
    with pytest.raises(InputError, match="slide not found|not found"):
        LoadTiled()({"image": "/nonexistent/slide.svs"})
    with pytest.raises(InputError, match="above max_pixels"):
        LoadTiled(max_pixels=100)({"image": rgb})
    with pytest.raises(ValueError, match="mpp must be a positive number"):
        LoadTiled(mpp=0)


def test_tissue_only_labels_glass_as_background():
    rgb = np.full((64, 96, 3), 245, np.uint8)  # glass
    rgb[:, :48] = (150, 60, 140)  # stained tissue on the left
    item = LoadTiled(mpp=1.0)({"image": rgb})
    item["pred"] = torch.ones(1, 64, 96)  # a network that says "tumour" everywhere
    label = TileLabeld()(item)["pred"][0].numpy()
    assert label[:, :44].all() and not label[:, 52:].any()  # tissue cut by the tile border stays tissue


def test_patch_classifier_paints_each_patch_with_its_class():
    image = torch.zeros(1, 3, 64, 96)
    image[:, 0, :32, :] = 1.0  # red top row of patches

    def classify(x: torch.Tensor) -> torch.Tensor:  # class 1 where the patch is red, else class 0
        red = x[:, 0].mean(dim=(1, 2))
        return torch.stack([1 - red, red, torch.zeros_like(red)], dim=1)

    painted = PatchClassifierInferer(patch_size=32)(image, classify)
    assert painted.shape == (1, 3, 64, 96)
    assert painted[0].argmax(0)[:32].eq(1).all() and painted[0].argmax(0)[32:].eq(0).all()
    with pytest.raises(ValueError, match=r"to \(B, C\) scores"):
        PatchClassifierInferer(patch_size=32)(image, lambda x: x)


def test_monai_label_output_is_x_first_and_a_placeholder_for_wsi_tiles():
    rgb, discs = _pattern(96, 160)
    item = LoadTiled(mpp=1.0)({"image": rgb})
    item["pred"] = _darkness(item["image"][None])[0]
    labelled = TileLabeld(threshold=0.45, tissue_only=False)(item)
    out = MonaiLabelOutputd()(labelled)
    assert "image" not in out and out["tile_label"] is labelled["pred"]
    assert out["pred"].shape == (160, 96) and np.array_equal(out["pred"].T, out["tile_label"][0].numpy())
    tile_of_a_slide = MonaiLabelOutputd()({**labelled, "result_write_to_file": False})
    assert tile_of_a_slide["pred"].shape == (1, 1)  # only result["annotation"] is used for /infer/wsi tiles
