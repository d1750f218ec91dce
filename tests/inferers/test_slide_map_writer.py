"""Slide inference to files: a pyramidal TIFF overlay, PNG thumbnails, GeoJSON regions where the slide's are."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from mixsup_monai.inferers import GeoJSONSink, SlideMapWriter, StreamingSlideInferer
from mixsup_monai.utils import load_network_weights
from mixsup_monai.utils.errors import InputError
from mixsup_monai.wsi import write_pyramidal_tiff

#: (centre y, centre x, radius) of the dark discs, in level-0 pixels
DISCS = ((300, 400, 150), (700, 900, 220))


class Darkness(torch.nn.Module):
    """Two logits per pixel: "light" and "dark" (dark purple discs ~0.7 darkness, pink background ~0.2)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dark = 1.0 - x.mean(dim=1, keepdim=True)
        return torch.cat([torch.zeros_like(dark), self.scale * (dark - 0.45)], dim=1)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    yy, xx = np.mgrid[:1024, :1280]
    rgb = np.empty((1024, 1280, 3), np.uint8)
    rgb[:] = (230, 170, 200)
    for cy, cx, r in DISCS:
        rgb[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = (90, 40, 120)
    path = tmp_path_factory.mktemp("writer") / "discs.tif"
    write_pyramidal_tiff(path, rgb, mpp=0.5, compression="lzw", min_level_size=128)
    return path


def _inside(point, ring) -> bool:
    """Even-odd rule: is ``point`` inside the closed polygon ``ring``."""
    x, y = point
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def test_writer_writes_an_overlay_thumbnails_and_regions_where_the_discs_are(slide, tmp_path):
    inferer = StreamingSlideInferer(roi_size=64, overlap=16, downsample=2.0, activation="softmax")
    writer = SlideMapWriter(inferer, Darkness(), tmp_path, classes=["background", "dark"], geojson_max_size=200)
    (result,) = writer.run([slide])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["discs.geojson", "discs_classes.png", "discs_overlay.png", "discs_prob.png", "discs_prob.tif"]
    assert result.map_size == (640, 512)
    with tifffile.TiffFile(tmp_path / "discs_prob.tif") as tif:
        level0 = tif.pages[0].asarray()
    assert level0.shape[:2] == (512, 640) and level0[150, 200] > 200 and level0[10, 10] < 50  # disc / background
    features = json.loads((tmp_path / "discs.geojson").read_text())["features"]
    assert {f["properties"]["classification"]["name"] for f in features} == {"dark"}
    rings = [f["geometry"]["coordinates"][0] for f in features]
    for cy, cx, _ in DISCS:  # each disc's centre inside a polygon (level-0 pixels), a point off the discs in none
        assert any(_inside((cx, cy), ring) for ring in rings)
    assert not any(_inside((1200, 60), ring) for ring in rings)
    assert len(rings) == len(DISCS)


def test_geojson_sink_memory_is_the_reduced_map():
    sink = GeoJSONSink("/nonexistent/x.geojson", ["a", "b"], downsample=4, max_size=100)
    sink.start((1000, 250), channels=2, mpp=None)
    assert sink.factor == 10 and sink._labels.shape == (25, 100)
    with pytest.raises(ValueError, match="needs 3 class names"):
        GeoJSONSink("x.geojson", ["a", "b"]).start((10, 10), channels=3, mpp=None)


def test_load_network_weights_takes_plain_state_dicts_and_round_checkpoints(tmp_path):
    source, target = Darkness(), Darkness()
    with torch.no_grad():
        source.scale.fill_(3.0)
    torch.save(source.state_dict(), tmp_path / "model.pt")
    torch.save({"model": source.state_dict(), "round": 2, "rng": np.random.default_rng(0)}, tmp_path / "round.pt")
    for name in ("model.pt", "round.pt"):
        target.scale.data.fill_(0.0)
        assert load_network_weights(target, tmp_path / name).scale.item() == 3.0
    torch.save({"other": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(InputError, match="weights do not fit the network"):
        load_network_weights(target, tmp_path / "wrong.pt")
    with pytest.raises(InputError, match="trained weights not found"):
        load_network_weights(target, tmp_path / "missing.pt")


def test_restrict_to_tissue_leaves_glass_out_of_the_map(tmp_path):
    """A network that says "dark" everywhere: on glass beside the tissue the map stays empty when restricted."""
    rgb = np.full((768, 1024, 3), 245, np.uint8)  # glass
    rgb[:, 512:] = (200, 120, 170)  # H&E-pink tissue on the right half
    path = tmp_path / "half.tif"
    write_pyramidal_tiff(path, rgb, mpp=0.5, compression="lzw", min_level_size=128)

    class Everywhere(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.zeros_like(x[:, :1]), torch.ones_like(x[:, :1]) * 5], dim=1)

    for restrict, glass_expected in ((False, 255), (True, 0)):
        inferer = StreamingSlideInferer(64, 16, downsample=2.0, restrict_to_tissue=restrict)
        out = tmp_path / f"restrict_{restrict}"
        SlideMapWriter(inferer, Everywhere(), out, classes=["background", "dark"]).run([path])
        with tifffile.TiffFile(out / "half_prob.tif") as tif:
            level0 = tif.pages[0].asarray()
        assert level0[:, 300:].min() >= 250  # tissue
        assert abs(int(level0[:, 244:254].max()) - glass_expected) <= 5  # glass in a window with tissue
