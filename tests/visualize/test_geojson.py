"""QuPath GeoJSON export: exact pixel-edge polygons with holes, QuPath's property layout, patches, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mixsup_monai.cli import main
from mixsup_monai.utils.errors import InputError
from mixsup_monai.visualize import (
    label_map_to_geojson,
    patches_to_geojson,
    probability_map_to_geojson,
    write_geojson,
)

try:  # not a dependency: validity is checked with shapely where it is installed, by hand everywhere
    import shapely.geometry
except ImportError:  # pragma: no cover - depends on the environment
    shapely = None


def signed_area(ring) -> float:
    pts = np.asarray(ring, dtype=np.float64)
    return float(np.sum(pts[:-1, 0] * pts[1:, 1] - pts[1:, 0] * pts[:-1, 1]) / 2)


def polygons(geometry: dict) -> list:
    return geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]


def rasterise(rings, shape, downsample=1.0, origin=(0, 0)) -> np.ndarray:
    """Even-odd fill of ``rings`` (level-0 coordinates) at the centres of the map's pixels."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    px = (xs + 0.5) * downsample + origin[0]
    py = (ys + 0.5) * downsample + origin[1]
    inside = np.zeros(shape, bool)
    for ring in rings:
        pts = np.asarray(ring, dtype=np.float64)
        for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
            if y0 == y1:
                continue
            crosses = (py >= min(y0, y1)) & (py < max(y0, y1))
            x_at = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
            inside ^= crosses & (px < x_at)
    return inside


def assert_valid_polygon(coords) -> None:
    """Closed rings, each simple (no vertex visited twice), exterior positive and holes negative (RFC 7946)."""
    for k, ring in enumerate(coords):
        assert len(ring) >= 4 and ring[0] == ring[-1]
        assert len({tuple(p) for p in ring[:-1]}) == len(ring) - 1, "ring visits a vertex twice"
        assert (signed_area(ring) > 0) == (k == 0)
    if shapely is not None:
        geometry = shapely.geometry.shape({"type": "Polygon", "coordinates": coords})
        assert geometry.is_valid, shapely.validation.explain_validity(geometry)


def assert_exact_cover(collection: dict, labels: np.ndarray, classes, downsample=1.0, origin=(0, 0)) -> None:
    """Every exported class: the polygons' area is its pixel count x downsample², their fill is its mask."""
    by_class: dict[str, list] = {}
    for feature in collection["features"]:
        for coords in polygons(feature["geometry"]):
            assert_valid_polygon(coords)
            by_class.setdefault(feature["properties"]["classification"]["name"], []).extend(coords)
    for value, name in enumerate(classes):
        if name not in by_class:
            assert value == 0 or not (labels == value).any(), f"class {name!r} was not exported"
            continue
        rings = by_class[name]
        assert sum(signed_area(r) for r in rings) == pytest.approx((labels == value).sum() * downsample**2)
        np.testing.assert_array_equal(rasterise(rings, labels.shape, downsample, origin), labels == value)


@pytest.fixture
def ring_and_blobs() -> np.ndarray:
    """Class 1: a 6 x 6 ring around a 2 x 2 hole and a separate 2 x 3 blob; class 2: one blob; 255 ignored."""
    m = np.zeros((12, 14), np.uint8)
    m[1:7, 1:7] = 1
    m[3:5, 3:5] = 0
    m[9:11, 2:5] = 1
    m[8:11, 9:13] = 2
    m[0, 10:14] = 255
    return m


def test_ring_and_two_blobs_give_exact_polygons_with_a_hole(ring_and_blobs):
    classes = ["normal", "tumour", "stroma"]
    collection = label_map_to_geojson(ring_and_blobs, classes, downsample=8, origin=(100, 200))
    back = json.loads(json.dumps(collection))  # plain JSON types only
    assert back == collection and back["type"] == "FeatureCollection"
    features = back["features"]
    names = [f["properties"]["classification"]["name"] for f in features]
    assert sorted(names) == ["stroma", "tumour", "tumour"]  # background 0 and ignored 255 skipped
    assert all(f["type"] == "Feature" and f["geometry"]["type"] == "Polygon" for f in features)
    ring = next(f for f in features if len(f["geometry"]["coordinates"]) == 2)
    exterior, hole = ring["geometry"]["coordinates"]
    assert exterior == [[108, 208], [156, 208], [156, 256], [108, 256], [108, 208]]
    assert sorted(map(tuple, hole[:-1])) == [(124, 224), (124, 240), (140, 224), (140, 240)]
    assert signed_area(exterior) == 36 * 64 and signed_area(hole) == -4 * 64
    areas = sorted(sum(signed_area(r) for r in f["geometry"]["coordinates"]) for f in features)
    assert areas == [6 * 64, 12 * 64, 32 * 64]
    assert_exact_cover(back, ring_and_blobs, classes, downsample=8, origin=(100, 200))


def test_qupath_property_layout_and_options(ring_and_blobs):
    classes = ["normal", "tumour", "stroma"]
    collection = label_map_to_geojson(
        ring_and_blobs, classes, colors={"tumour": (200, 0, 0)}, object_type="detection", merge=True
    )
    tumour = next(f for f in collection["features"] if f["properties"]["classification"]["name"] == "tumour")
    assert tumour["properties"] == {
        "objectType": "detection",
        "classification": {"name": "tumour", "color": [200, 0, 0]},
    }
    assert tumour["geometry"]["type"] == "MultiPolygon" and len(tumour["geometry"]["coordinates"]) == 2
    assert len(collection["features"]) == 2  # merge: one feature per class
    # min_area drops the 6-pixel blob; include_background exports class 0 (with the ring's hole as a region)
    assert len(label_map_to_geojson(ring_and_blobs, classes, min_area=7)["features"]) == 2
    with_background = label_map_to_geojson(ring_and_blobs, classes, include_background=True)
    assert sum(f["properties"]["classification"]["name"] == "normal" for f in with_background["features"]) == 2
    assert_exact_cover(with_background, ring_and_blobs, classes)


def test_random_maps_are_covered_exactly_by_valid_polygons():
    # random maps are full of corner-only touches (the hard case of pixel-edge tracing)
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 3, size=(rng.integers(1, 25), rng.integers(1, 25))).astype(np.uint8)
        collection = label_map_to_geojson(labels, ["bg", "a", "b"], downsample=2.5, origin=(3, 7))
        assert_exact_cover(collection, labels, ["bg", "a", "b"], downsample=2.5, origin=(3, 7))


def test_corner_touch_inside_one_region_is_a_hole_touching_the_exterior():
    # a C whose ends touch at a corner: one region; the enclosed pixel is a hole meeting the exterior at (2, 2)
    labels = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 0]], np.uint8)
    (feature,) = label_map_to_geojson(labels, ["bg", "c"])["features"]
    exterior, hole = feature["geometry"]["coordinates"]
    assert [2, 2] in exterior and [2, 2] in hole
    assert_exact_cover({"features": [feature]}, labels, ["bg", "c"])


def test_simplify_keeps_fewer_vertices_close_to_the_area():
    yy, xx = np.mgrid[0:64, 0:64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 25**2).astype(np.uint8)
    exact = label_map_to_geojson(disc, ["bg", "disc"])["features"][0]["geometry"]["coordinates"][0]
    rough = label_map_to_geojson(disc, ["bg", "disc"], simplify=1.0)["features"][0]["geometry"]["coordinates"][0]
    assert len(rough) < len(exact) / 2
    assert signed_area(rough) == pytest.approx(disc.sum(), rel=0.03)


@pytest.mark.parametrize(
    "labels, kwargs, message",
    [
        (np.array([[0, 3]], np.uint8), {}, "class map holds class index 3, beyond the 2 class name(s)"),
        (np.zeros((2, 2), np.float32), {}, "class map must hold integer class indices"),
        (np.zeros((1, 2, 2), np.uint8), {}, "class map must be 2-D"),
        (np.zeros((2, 2), np.uint8), {"downsample": 0}, "downsample must be a positive finite number"),
        (np.zeros((2, 2), np.uint8), {"object_type": "cell"}, "unknown QuPath object type"),
    ],
)
def test_bad_label_maps_are_refused(labels, kwargs, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        label_map_to_geojson(labels, ["bg", "tumour"], **kwargs)


def test_probability_map_thresholds_into_tumour_polygons():
    prob = np.zeros((6, 6))
    prob[1:3, 1:4] = 0.9
    prob[4, 4] = 0.6
    prob[5, 0] = np.nan
    collection = probability_map_to_geojson(prob, threshold=0.7, downsample=4)
    (feature,) = collection["features"]
    assert feature["properties"]["classification"]["name"] == "Tumor"
    assert feature["geometry"]["coordinates"] == [[[4, 4], [16, 4], [16, 12], [4, 12], [4, 4]]]
    # (C, H, W): most probable class where it is confident enough
    stack = np.stack([1 - prob, prob, np.zeros_like(prob)])
    names = [
        f["properties"]["classification"]["name"]
        for f in probability_map_to_geojson(stack, 0.55, classes=["bg", "Tumor", "Other"])["features"]
    ]
    assert names == ["Tumor", "Tumor"]
    with pytest.raises(InputError, match="one class name per channel"):
        probability_map_to_geojson(stack, classes=["bg", "Tumor"])


def test_patches_are_squares_with_their_scores_as_measurements():
    locations = np.array([[0, 0], [512, 256], [1024, 0]])
    collection = json.loads(json.dumps(patches_to_geojson(locations, 256, [0.2, 0.9, 0.5], top_k=2)))
    first, second = collection["features"]
    assert first["geometry"] == {
        "type": "Polygon",
        "coordinates": [[[512, 256], [768, 256], [768, 512], [512, 512], [512, 256]]],
    }
    assert first["properties"]["measurements"] == {"score": 0.9} and second["properties"]["measurements"] == {
        "score": 0.5
    }
    assert first["properties"]["objectType"] == "detection"
    assert first["properties"]["classification"]["name"] == "Tumor"
    assert signed_area(second["geometry"]["coordinates"][0]) == 256 * 256
    tiles = patches_to_geojson(locations, (10, 20), {"p": [1, 2, 3], "q": [0, 0, 1]}, object_type="tile")
    assert [f["properties"]["measurements"] for f in tiles["features"]][2] == {"p": 3.0, "q": 1.0}
    assert tiles["features"][0]["geometry"]["coordinates"][0][2] == [10, 20]
    with pytest.raises(InputError, match="one finite number per patch"):
        patches_to_geojson(locations, 256, [0.1, float("nan"), 0.3])


def test_write_geojson_is_atomic_and_reads_back(tmp_path, ring_and_blobs):
    collection = label_map_to_geojson(ring_and_blobs, ["bg", "tumour", "stroma"])
    path = write_geojson(tmp_path / "out" / "map.geojson", collection)
    assert json.loads(path.read_text()) == collection
    assert sorted(p.name for p in path.parent.iterdir()) == ["map.geojson"]  # no temporary file left behind
    with pytest.raises(InputError, match="not a GeoJSON FeatureCollection"):
        write_geojson(tmp_path / "bad.geojson", {"type": "Feature"})
    assert not (tmp_path / "bad.geojson").exists()


def run_geojson(cwd: Path, capsys, *args: str) -> tuple[int, str, str]:
    here = os.getcwd()
    os.chdir(cwd)
    try:
        main(["geojson", *args])
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        os.chdir(here)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_geojson_writes_the_map_and_refuses_bad_input_in_one_line(tmp_path, capsys, ring_and_blobs):
    cwd = tmp_path.resolve()
    Image.fromarray(ring_and_blobs).save(cwd / "map.png")
    code, out, err = run_geojson(cwd, capsys, "map.png", "--classes", "normal,tumour,stroma", "--downsample", "8")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["features"] == 3 and summary["classes"] == {"tumour": 2, "stroma": 1}
    collection = json.loads((cwd / "map.geojson").read_text())
    assert_exact_cover(collection, ring_and_blobs, ["normal", "tumour", "stroma"], downsample=8)
    np.save(cwd / "float.npy", np.zeros((2, 2)))
    Image.new("RGB", (4, 4)).save(cwd / "rgb.png")
    bad = {
        ("nope.png", "a,b", "1"): f"error: label map not found ({cwd / 'nope.png'}): this path does not exist; "
        "check its spelling and the current folder",
        ("map.png", "normal,tumour", "1"): f"error: class map holds class index 2, beyond the 2 class name(s) "
        f"['normal', 'tumour'] ({cwd / 'map.png'}): give one name per class index 0..2 (values [255] are ignored)",
        ("map.png", "a,b,c", "0"): f"error: --downsample must be a positive finite number ({cwd / 'map.png'}): got 0",
        ("float.npy", "a,b", "1"): f"error: class map must hold integer class indices ({cwd / 'float.npy'}): "
        "got dtype float64",
    }
    for (name, classes, downsample), expected in bad.items():
        code, out, err = run_geojson(cwd, capsys, name, "--classes", classes, "--downsample", downsample)
        assert (code, err) == (1, expected + "\n")
    code, _, err = run_geojson(cwd, capsys, "rgb.png", "--classes", "a,b")
    assert code == 1 and err.startswith(f"error: label map cannot be read as a class map ({cwd / 'rgb.png'}): ")
    assert "got mode 'RGB'" in err and err.count("\n") == 1
