"""Streamed slide maps: equal to the in-memory sliding window, written as TIFF / PNG, memory flat in slide size."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from mixsup_monai.inferers import (
    ArraySink,
    ContextSlidingWindowInferer,
    PyramidalTiffSink,
    StreamingSlideInferer,
    ThumbnailSink,
    map_to_uint8,
)
from mixsup_monai.transforms import LoadSlided
from mixsup_monai.wsi import detect_tissue, write_pyramidal_tiff


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    """A 1232 x 1000 px noise slide (lossless, so that both paths read the same pixels) at 0.5 um/px."""
    image = np.random.default_rng(0).integers(0, 256, (1000, 1232, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("streaming") / "noise.tif"
    write_pyramidal_tiff(path, image, mpp=0.5, compression="zlib")
    return path


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 2, 1).eval()


@pytest.mark.parametrize(
    ("downsample", "roi", "overlap", "margin"),
    [(1, 96, 48, 16), (2, 64, 16, 0), (2, 128, 64, 16), (4, 512, 128, 0)],  # the last: map smaller than a window
)
def test_streamed_map_equals_the_in_memory_sliding_window(slide_path, downsample, roi, overlap, margin):
    net = network()
    item = LoadSlided(downsample=downsample)({"image": str(slide_path)})
    with torch.no_grad():
        logits = ContextSlidingWindowInferer(roi, margin, overlap=overlap / roi, sw_batch_size=4)(
            item["image"][None], net
        )
    expected = torch.softmax(logits, dim=1)[0].numpy()
    sink = ArraySink()
    result = StreamingSlideInferer(roi, overlap, margin, downsample=downsample, sw_batch_size=5)(slide_path, net, sink)
    assert result.map_size == (expected.shape[2], expected.shape[1])
    assert result.skipped == 0 and result.outputs == [sink.values]
    assert sink.covered.all()
    np.testing.assert_allclose(sink.values, expected, atol=1e-5)


def test_tiff_and_thumbnail_sinks_write_the_map(slide_path, tmp_path):
    openslide = pytest.importorskip("openslide")
    inferer = StreamingSlideInferer(128, 32, downsample=2, sw_batch_size=8)
    sinks = [
        ArraySink(),
        PyramidalTiffSink(tmp_path / "probability.tif"),
        PyramidalTiffSink(tmp_path / "classes.tif", encoding="class"),
        ThumbnailSink(tmp_path / "thumbnail.png", max_size=100),
    ]
    result = inferer(slide_path, network(), sinks)
    values = result.outputs[0]
    covered = np.ones(values.shape[1:], bool)
    with openslide.OpenSlide(str(tmp_path / "probability.tif")) as written:
        assert written.level_dimensions[0] == result.map_size == (616, 500)
        assert float(written.properties["openslide.mpp-x"]) == pytest.approx(1.0)  # 0.5 um/px x downsample 2
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "probability.tif", level=0), map_to_uint8(values, covered))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "classes.tif", level=0), values.argmax(0))
    thumbnail = np.asarray(Image.open(tmp_path / "thumbnail.png"))
    assert thumbnail.shape == (72, 88)  # 616 x 500 reduced by ceil(616 / 100) = 7
    box = map_to_uint8(values, covered)[:7, :7].mean()
    assert abs(int(thumbnail[0, 0]) - box) <= 1


def test_tissue_mask_skips_glass_windows(tmp_path):
    """Windows without tissue are neither read nor run; their pixels are uncovered (0 in the probability map)."""
    image = np.full((1024, 1024, 3), 240, np.uint8)
    image[100:400, 150:500] = (200, 80, 160)  # one pink tissue block in the top-left quarter
    path = tmp_path / "block.tif"
    write_pyramidal_tiff(path, image, mpp=0.5, compression="zlib")
    calls = []

    def net(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return torch.stack([1 - x[:, 1], x[:, 1]], dim=1)

    sink = ArraySink()
    result = StreamingSlideInferer(128, 32, downsample=1)(path, net, sink, tissue=detect_tissue(path))
    assert result.skipped > 0 and result.windows + result.skipped == 11 * 11
    assert sum(calls) == result.windows + 1  # + the probe that learns the number of channels
    assert sink.covered[100:400, 150:500].all()
    assert not sink.covered[700:, 700:].any()
    assert (sink.values[:, 700:, 700:] == 0).all()


_CHILD = r"""
import json, resource, sys
import torch
torch.set_num_threads(1)
from mixsup_monai.inferers import PyramidalTiffSink, StreamingSlideInferer, ThumbnailSink
from mixsup_monai.wsi import detect_tissue
slide, out = sys.argv[1], sys.argv[2]
net = torch.nn.Conv2d(3, 2, 1).eval()
inferer = StreamingSlideInferer(256, 64, downsample=2, sw_batch_size=8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sinks = [PyramidalTiffSink(out + ".tif"), ThumbnailSink(out + ".png")]
result = inferer(slide, net, sinks, tissue=detect_tissue(slide))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rss_before_mb": before / 1024, "rss_after_mb": after / 1024, "windows": result.windows,
                  "map_size": result.map_size}))
"""


def _peak_rss(slide, out) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(slide), str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_slide_size(tmp_path):
    """A 16384^2 slide (16x the area of 4096^2, a 8192^2 map) costs the accumulator's width, not the map's area."""
    from mixsup_monai.demo.synthetic_slide import write_synthetic_slide

    for side in (4096, 16384):
        write_synthetic_slide(tmp_path / f"s{side}.tif", size=(side, side), tissue_fraction=0.05, seed=1)
    small, large = (_peak_rss(tmp_path / f"s{side}.tif", tmp_path / f"map{side}") for side in (4096, 16384))
    assert tuple(large["map_size"]) == (8192, 8192) and large["windows"] > small["windows"]
    # the in-memory path would hold the 8192^2 RGB input (768 MB as float) and map (512 MB); streamed, the
    # (2 + 1) x 256 x 8192 float32 accumulator is 25 MB and a row of map tiles 2 MB
    assert large["rss_after_mb"] - small["rss_after_mb"] < 96, (small, large)
    with tifffile.TiffFile(tmp_path / "map16384.tif") as tif:
        assert tif.pages[0].shape == (8192, 8192)
    assert Image.open(tmp_path / "map16384.png").size == (1024, 1024)


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="leaves gaps"):
        StreamingSlideInferer(96, 16, margin=16)
    with pytest.raises(ValueError, match="overlap must be in"):
        StreamingSlideInferer(96, 96)
    with pytest.raises(ValueError, match="activation must be one of"):
        StreamingSlideInferer(96, 32, activation="relu")


def test_network_output_shape_is_checked(slide_path):
    expected = "must map (B, 3, 64, 64) windows to (B, L, 64, 64) maps, got (1, 2, 62, 62)"
    with pytest.raises(ValueError, match=re.escape(expected)):
        StreamingSlideInferer(64, 16)(slide_path, torch.nn.Conv2d(3, 2, 3), ArraySink())
