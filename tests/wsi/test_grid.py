"""Tests of mixsup_monai.wsi.grid: coordinates, levels and MPP, tissue fraction, cache, empty-slide errors."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import tifffile

from mixsup_monai.wsi import PatchGrid, SlideInfo, TissueMask, build_patch_grid, detect_tissue, open_slide


def _mask(shape=(96, 128), left_fraction: float = 1.0) -> TissueMask:
    """A user-style tissue mask of the 2048 x 1536 test slides at downsample 16; tissue in the left part."""
    mask = np.zeros(shape, bool)
    mask[:, : round(shape[1] * left_fraction)] = True
    return TissueMask(mask=mask, level=3, downsample=2048 / shape[1], threshold=30.0)


@pytest.mark.parametrize(
    "patch_size, level, overlap, expected",
    [
        (256, 0, 0, 8 * 6),
        (256, 0, 128, 15 * 11),
        (256, 1, 0, 4 * 3),
        (200, 1, 0, 5 * 3),
        (100, 2, 50, 9 * 6),
    ],
)
def test_grid_covers_the_slide_with_whole_patches(he_slide, patch_size, level, overlap, expected):
    with open_slide(he_slide["path"]) as slide:
        grid = build_patch_grid(slide, _mask(), patch_size=patch_size, level=level, overlap=overlap)
    ds = 2**level
    assert len(grid) == expected
    assert grid.x.dtype == np.int64 and grid.y.dtype == np.int64 and grid.tissue_fraction.dtype == np.float32
    assert grid.level == level and grid.patch_size == patch_size and grid.downsample == pytest.approx(ds)
    stride0 = (patch_size - overlap) * ds
    assert set(np.unique(grid.x)) == set(range(0, int(grid.x.max()) + 1, stride0))
    assert (grid.x + patch_size * ds <= 2048).all() and (grid.y + patch_size * ds <= 1536).all()
    np.testing.assert_allclose(grid.tissue_fraction, 1.0)


def test_min_tissue_fraction_keeps_only_tissue_patches(he_slide):
    with open_slide(he_slide["path"]) as slide:
        half = build_patch_grid(slide, _mask(left_fraction=0.5), patch_size=256, min_tissue_fraction=0.5)
        straddling = build_patch_grid(slide, _mask(left_fraction=0.5625), patch_size=256, min_tissue_fraction=0.5)
        strict = build_patch_grid(slide, _mask(left_fraction=0.5625), patch_size=256, min_tissue_fraction=0.9)
    assert sorted(set(half.x.tolist())) == [0, 256, 512, 768]
    assert sorted(set(straddling.x.tolist())) == [0, 256, 512, 768, 1024]  # the 1024 column is half tissue
    np.testing.assert_allclose(straddling.tissue_fraction[straddling.x == 1024], 0.5)
    assert sorted(set(strict.x.tolist())) == [0, 256, 512, 768]


def test_grid_on_detected_tissue_matches_truth(he_slide):
    with open_slide(he_slide["path"]) as slide:
        grid = build_patch_grid(slide, detect_tissue(slide), patch_size=128, min_tissue_fraction=0.5)
    truth = he_slide["tissue"]
    inside = [truth[y : y + 128, x : x + 128].mean() for x, y in zip(grid.x, grid.y)]
    assert min(inside) > 0.3 and len(grid) > 30
    assert (grid.x < 0.6 * 2048).all()  # nothing on the pen stroke at x = 0.8 W


def test_mpp_chooses_the_level(he_slide):
    with open_slide(he_slide["path"]) as slide:
        grid = build_patch_grid(slide, _mask(), patch_size=128, mpp=1.0)
        assert grid.level == 1 and grid.params["mpp"] == 1.0
        with pytest.raises(ValueError, match=r"no level within 10% of 0.7 um/px.*level 0: 0.5, level 1: 1"):
            build_patch_grid(slide, _mask(), patch_size=128, mpp=0.7)
        with pytest.raises(ValueError, match="give level or mpp, not both"):
            build_patch_grid(slide, _mask(), level=1, mpp=1.0)


def test_mpp_unknown_asks_for_mpp(tmp_path):
    path = tmp_path / "nompp.tif"
    tifffile.imwrite(path, np.full((512, 512, 3), 200, np.uint8), tile=(256, 256), compression="jpeg")
    mask = TissueMask(mask=np.ones((32, 32), bool), level=0, downsample=16.0, threshold=None)
    with pytest.raises(ValueError, match=r"MPP is unknown.*pass the scanner's level-0 MPP, e.g. open_slide\(path"):
        build_patch_grid(path, mask, patch_size=128, mpp=0.5)


def test_no_tissue_is_a_clear_error_or_a_logged_skip(blank_slide, caplog):
    tissue = detect_tissue(blank_slide)
    pattern = (
        r"blank\.tif': no tissue patch at level 0 .*saturation threshold 15\.0.*pass a tissue_mask "
        r"\(detect_tissue\(slide, user_mask=...\)\) or lower min_tissue_fraction"
    )
    with pytest.raises(ValueError, match=pattern):
        build_patch_grid(blank_slide, tissue, patch_size=256)
    with caplog.at_level(logging.WARNING, logger="mixsup_monai.wsi.grid"):
        grid = build_patch_grid(blank_slide, tissue, patch_size=256, skip_empty=True)
    assert len(grid) == 0 and grid.to_items() == []
    assert "no tissue patch at level 0" in caplog.text and "skip_empty=True" in caplog.text


def test_slide_smaller_than_a_patch(he_slide, caplog):
    with open_slide(he_slide["path"]) as slide:
        with pytest.raises(ValueError, match=r"is 256 x 192 px at level 3, smaller than one 256 px patch"):
            build_patch_grid(slide, _mask(), patch_size=256, level=3)
        with caplog.at_level(logging.WARNING, logger="mixsup_monai.wsi.grid"):
            assert len(build_patch_grid(slide, _mask(), patch_size=256, level=3, skip_empty=True)) == 0
    assert "smaller than one 256 px patch" in caplog.text


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"patch_size": 0}, "patch_size must be a positive int, got 0"),
        ({"overlap": 256}, r"overlap must be an int in \[0, patch_size=256\), got 256"),
        ({"min_tissue_fraction": 1.5}, r"min_tissue_fraction must be in \[0, 1\], got 1.5"),
    ],
)
def test_rejects_bad_parameters(he_slide, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_patch_grid(he_slide["path"], _mask(), **kwargs)


def test_cache_hit_and_invalidation(gradient_slide, tmp_path):
    path = tmp_path / "slide.tif"
    path.write_bytes(gradient_slide["path"].read_bytes())
    cache = tmp_path / "cache"
    first = build_patch_grid(path, _mask(left_fraction=0.5), patch_size=256, cache_dir=cache)
    second = build_patch_grid(path, _mask(left_fraction=0.5), patch_size=256, cache_dir=cache)
    assert not first.from_cache and second.from_cache
    assert len(list(cache.glob("slide-*.npz"))) == 1
    np.testing.assert_array_equal(first.x, second.x)
    np.testing.assert_array_equal(first.y, second.y)
    np.testing.assert_array_equal(first.tissue_fraction, second.tissue_fraction)
    assert second.params == first.params and second.level == first.level

    assert not build_patch_grid(path, _mask(left_fraction=0.5), patch_size=256, overlap=64, cache_dir=cache).from_cache
    assert not build_patch_grid(path, _mask(left_fraction=0.75), patch_size=256, cache_dir=cache).from_cache
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # "touch"
    touched = build_patch_grid(path, _mask(left_fraction=0.5), patch_size=256, cache_dir=cache)
    assert not touched.from_cache
    assert build_patch_grid(path, _mask(left_fraction=0.5), patch_size=256, cache_dir=cache).from_cache


def test_to_items_and_save_load(he_slide, tmp_path):
    with open_slide(he_slide["path"]) as slide:
        grid = build_patch_grid(slide, _mask(left_fraction=0.25), patch_size=256, level=1)
    items = grid.to_items()
    assert items[0] == {
        "image": str(he_slide["path"].resolve()),
        "location": [int(grid.x[0]), int(grid.y[0])],
        "size": [256, 256],
        "level": 1,
    }
    assert grid.to_items("relative.tif")[0]["image"] == "relative.tif"
    grid.save(tmp_path / "g.npz")
    loaded = PatchGrid.load(tmp_path / "g.npz")
    np.testing.assert_array_equal(loaded.locations, grid.locations)
    assert loaded.params == grid.params


def test_grid_memory_does_not_scale_with_empty_slide_area():
    # the grid is scanned in row chunks: 4000 x 4000 candidate cells (1,024,000 px square slide), a few kept
    import tracemalloc

    from mixsup_monai.wsi import grid as grid_module

    class FakeSlide(grid_module.Slide):
        def __init__(self):
            self.info = SlideInfo(
                path="/fake/huge.svs",
                backend="cucim",
                level_count=1,
                level_dimensions=((1_024_000, 1_024_000),),
                level_downsamples=(1.0,),
                mpp=0.25,
                mpp_source="user",
                vendor=None,
            )

    mask = np.zeros((2000, 2000), bool)
    mask[:2, :2] = True
    tissue = TissueMask(mask=mask, level=0, downsample=512.0, threshold=20.0)
    tracemalloc.start()
    grid = build_patch_grid(FakeSlide(), tissue, patch_size=256)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert 4 <= len(grid) <= 16 and (grid.x < 2048).all() and (grid.y < 2048).all()
    assert peak < 40e6  # integral image of the mask (16 MB) + one row chunk; one int64 per cell would be 128 MB
