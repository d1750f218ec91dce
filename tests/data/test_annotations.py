"""Labelled tiles of MONAI Label's datastore: record checks, patch geometry, slide items and the annotated dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mixsup_monai.data.annotations import (
    AnnotatedDataset,
    annotated_tiles,
    annotation_patch_items,
    annotation_slide_items,
    tile_positions,
)
from mixsup_monai.transforms import LoadSlided, LoadSlideRegiond
from mixsup_monai.utils.errors import InputError, InputNotFoundError
from mixsup_monai.wsi import write_pyramidal_tiff


def _record(tmp_path, name: str, labels: np.ndarray, size: tuple[int, int] | None = None) -> dict:
    """A PNG tile of ``size`` (default: the label's) with a gradient, and its 'L'-mode label map."""
    height, width = labels.shape[:2] if size is None else (size[1], size[0])
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), np.full_like(xx, 128)], -1)
    Image.fromarray(rgb.astype(np.uint8)).save(tmp_path / f"{name}.png")
    Image.fromarray(labels.astype(np.uint8)).save(tmp_path / f"{name}_label.png")
    return {"image": str(tmp_path / f"{name}.png"), "label": str(tmp_path / f"{name}_label.png")}


def _stripes(width: int = 200, height: int = 150, split: int = 101) -> np.ndarray:
    """Label map of class 0 left of column ``split`` and class 1 from it, its top 10 rows unlabelled."""
    labels = np.zeros((height, width), np.uint8)
    labels[:, split:] = 1
    labels[:10] = 255
    return labels


def _one_line_error(error: pytest.ExceptionInfo, *parts: str) -> str:
    text = str(error.value)
    assert "\n" not in text and all(part in text for part in parts), text
    return text


def test_tiles_are_one_level_slides_at_input_mpp(tmp_path):
    """A PNG tile is described at ``input_mpp`` with its label as mask at level 0 and its labelled pixel count."""
    record = _record(tmp_path, "t", _stripes(96, 64))
    (tile,) = annotated_tiles([{**record, "extra": 1}], num_classes=2, input_mpp=0.5)
    assert tile == {
        "image": record["image"],
        "mask": record["label"],
        "mask_level": 0,
        "mpp": 0.5,
        "width": 96,
        "height": 64,
        "labelled": 96 * 54,
    }


def test_record_without_label_or_with_missing_file_is_refused(tmp_path):
    """A record without 'label' is an InputError; a missing label file is an InputNotFoundError naming it."""
    record = _record(tmp_path, "t", _stripes(96, 64))
    with pytest.raises(InputError, match=r"record 0 is not \{'image': tile, 'label': label map\}") as error:
        annotated_tiles([{"image": record["image"]}], num_classes=2)
    _one_line_error(error, "train#dataset#data")
    missing = str(tmp_path / "nowhere.png")
    with pytest.raises(InputNotFoundError, match="record 1: label file not found") as error:
        annotated_tiles([record, {"image": record["image"], "label": missing}], num_classes=2)
    _one_line_error(error, missing)
    assert isinstance(error.value, ValueError) and isinstance(error.value, FileNotFoundError)


def test_label_of_another_size_names_the_label_file(tmp_path):
    """A label map whose size differs from the tile's is refused, naming the label file and both sizes."""
    record = _record(tmp_path, "t", _stripes(90, 64), size=(96, 64))
    with pytest.raises(InputError, match=r"label is 90 x 64 px, its tile 96 x 64 px") as error:
        annotated_tiles([record], num_classes=2)
    _one_line_error(error, record["label"], record["image"])


def test_label_values_that_are_not_classes_are_listed(tmp_path):
    """Values >= num_classes other than 255 are refused and listed; 255 alone is accepted as unlabelled."""
    labels = _stripes(96, 64)
    labels[20, :5] = 3
    labels[30, :5] = 7
    record = _record(tmp_path, "t", labels)
    with pytest.raises(InputError, match=r"label values \[3, 7\] are not classes") as error:
        annotated_tiles([record], num_classes=3)
    _one_line_error(error, record["label"], "0..2")
    assert annotated_tiles([record], num_classes=8)[0]["labelled"] == 96 * 54


def test_all_unlabelled_or_rgb_label_is_refused(tmp_path):
    """An all-255 label marks no pixel and an RGB label is not single-channel: both are InputErrors."""
    empty = _record(tmp_path, "empty", np.full((64, 96), 255, np.uint8))
    with pytest.raises(InputError, match="label marks no pixel") as error:
        annotated_tiles([empty], num_classes=2)
    _one_line_error(error, empty["label"])
    rgb = _record(tmp_path, "rgb", np.zeros((64, 96, 3), np.uint8))
    with pytest.raises(InputError, match="label is not a single-channel uint8 image") as error:
        annotated_tiles([rgb], num_classes=2)
    _one_line_error(error, rgb["label"], "'RGB'")


def test_tile_positions_cover_the_extent_flush_with_its_end():
    """Starts step by ``stride``, the last one flush with the end; a short extent gets one centred patch."""
    assert tile_positions(200, 64, 64) == [0, 64, 128, 136]
    assert tile_positions(150, 64, 64) == [0, 64, 86]
    assert tile_positions(192, 64, 64) == [0, 64, 128]
    assert tile_positions(100, 64, 32) == [0, 32, 36]
    assert tile_positions(64, 64, 64) == [0]
    assert tile_positions(40, 64, 64) == [-12]


def test_patches_cover_the_tile_at_the_network_resolution(tmp_path):
    """mpp 2 on a 1 µm/px tile makes 32 px patches 64 tile px, on a grid covering 200 x 150 px."""
    record = _record(tmp_path, "t", _stripes())
    items = annotation_patch_items([record], patch_size=32, mpp=2.0, num_classes=2, input_mpp=1.0, min_labelled=0)
    assert [item["location"] for item in items] == [[x, y] for y in (0, 64, 86) for x in (0, 64, 128, 136)]
    for item in items:
        assert item == {
            "image": record["image"],
            "location": item["location"],
            "size": [64, 64],
            "level": 0,
            "mask": record["label"],
            "mask_level": 0,
            "mpp": 1.0,
            "region": [0, 0, 200, 150],
        }
    strided = annotation_patch_items([record], 32, 2.0, 2, input_mpp=1.0, stride=16, min_labelled=0)
    assert sorted({item["location"][0] for item in strided}) == [0, 32, 64, 96, 128, 136]


def test_patch_size_follows_the_tile_own_mpp(tmp_path):
    """A tile that states 0.5 µm/px gets 128 px patches for 32 network px at 2 µm/px, whatever input_mpp."""
    rgb = np.full((160, 256, 3), 200, np.uint8)
    write_pyramidal_tiff(tmp_path / "tile.tiff", rgb, mpp=0.5, compression="zlib")
    Image.fromarray(np.ones((160, 256), np.uint8)).save(tmp_path / "tile_label.png")
    record = {"image": str(tmp_path / "tile.tiff"), "label": str(tmp_path / "tile_label.png")}
    items = annotation_patch_items([record], patch_size=32, mpp=2.0, num_classes=2, input_mpp=1.0)
    assert {tuple(item["size"]) for item in items} == {(128, 128)} and {item["mpp"] for item in items} == {0.5}
    assert [item["location"] for item in items] == [[0, 0], [128, 0], [0, 32], [128, 32]]
    (slide_item,) = annotation_slide_items([record], mpp=2.0, num_classes=2, input_mpp=1.0)
    assert slide_item["downsample"] == pytest.approx(4.0)


def test_tile_smaller_than_a_patch_gives_one_centred_patch(tmp_path):
    """A 40 x 30 tile under a 64 px patch gives one patch at a negative, centred location."""
    record = _record(tmp_path, "small", np.zeros((30, 40), np.uint8))
    (item,) = annotation_patch_items([record], patch_size=64, mpp=1.0, num_classes=2, input_mpp=1.0)
    assert item["location"] == [-12, -17] and item["size"] == [64, 64] and item["region"] == [0, 0, 40, 30]


def test_patches_under_min_labelled_are_dropped(tmp_path):
    """Patches labelled on less than ``min_labelled`` of their area are dropped, others kept."""
    labels = np.full((64, 192), 255, np.uint8)
    labels[:, :64] = 0  # patch x=0: fully labelled
    labels[:, 64:70] = 1  # patch x=64: 6 of 64 columns (9 %)
    record = _record(tmp_path, "t", labels)
    kept = annotation_patch_items([record], 32, 2.0, 2, input_mpp=1.0, min_labelled=0.05)
    assert [item["location"] for item in kept] == [[0, 0], [64, 0]]
    kept = annotation_patch_items([record], 32, 2.0, 2, input_mpp=1.0, min_labelled=0.1)
    assert [item["location"] for item in kept] == [[0, 0]]


def test_bad_patch_arguments_are_refused(tmp_path):
    """A non-positive patch size, stride or mpp is a ValueError."""
    record = _record(tmp_path, "t", _stripes(96, 64))
    with pytest.raises(ValueError, match="patch_size and stride must be > 0"):
        annotation_patch_items([record], 0, 1.0, 2)
    with pytest.raises(ValueError, match="patch_size and stride must be > 0"):
        annotation_patch_items([record], 32, 1.0, 2, stride=0)
    with pytest.raises(ValueError, match="mpp must be a positive number"):
        annotation_patch_items([record], 32, 0.0, 2)
    with pytest.raises(ValueError, match="input_mpp must be a positive number"):
        annotation_slide_items([record], 1.0, 2, input_mpp=float("nan"))


def test_slide_items_downsample_to_the_network_mpp(tmp_path):
    """Slide items carry image/mask/mask_level/mpp and downsample = mpp / tile mpp."""
    records = [_record(tmp_path, "a", _stripes(96, 64)), _record(tmp_path, "b", _stripes(200, 150))]
    items = annotation_slide_items(records, mpp=2.0, num_classes=2, input_mpp=0.5)
    assert items == [
        {"image": r["image"], "mask": r["label"], "mask_level": 0, "mpp": 0.5, "downsample": 4.0} for r in records
    ]


def test_annotated_dataset_holds_items_then_annotation_items(tmp_path):
    """The dataset lists the bundle's items first, then the items ``data_items`` makes of ``data``."""
    records = [_record(tmp_path, "t", _stripes(96, 64))]
    seen = []

    def data_items(data):
        seen.append(list(data))
        return [{"image": r["image"], "tag": "annotated"} for r in data]

    own = [{"image": "slide.tiff", "tag": "own"}]
    ds = AnnotatedDataset(own, data=records, data_items=data_items)
    assert (
        seen == [records]
        and len(ds) == 2
        and ds.annotation_items == [{"image": records[0]["image"]} | {"tag": "annotated"}]
    )
    assert [ds[i]["tag"] for i in range(2)] == ["own", "annotated"]
    for empty in (None, []):
        plain = AnnotatedDataset(own, data=empty, transform=lambda d: {**d, "seen": True})
        assert len(plain) == 1 and plain.annotation_items == [] and plain[0] == {**own[0], "seen": True}
    with pytest.raises(ValueError, match="without data_items"):
        AnnotatedDataset(own, data=records)


def test_loaded_patch_label_is_the_nearest_resized_label_block(tmp_path):
    """LoadSlideRegiond on a patch item gives its (3, 32, 32) image and the label block resized by nearest."""
    labels = _stripes()
    record = _record(tmp_path, "t", labels)
    items = annotation_patch_items([record], patch_size=32, mpp=2.0, num_classes=2, input_mpp=1.0)
    load = LoadSlideRegiond(keys="image", out_size=(32, 32), mask_key="mask", mask_output_key="label")
    (item,) = [i for i in items if i["location"] == [64, 0]]
    out = load(item)
    assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.float32
    assert out["label"].shape == (1, 32, 32) and out["label"].dtype == torch.int64
    block = Image.fromarray(labels[0:64, 64:128]).resize((32, 32), Image.NEAREST)
    np.testing.assert_array_equal(out["label"][0].numpy(), np.asarray(block))
    assert set(np.unique(out["label"].numpy())) == {0, 1, 255}
    # the image's red channel grows with x, like the tile: the class-1 columns are the redder ones
    class_one = out["label"][0, 10] == 1
    assert out["image"][0, :, class_one].mean() > out["image"][0, :, ~class_one].mean()
    edge = next(i for i in items if i["location"] == [136, 86])
    block = Image.fromarray(labels[86:150, 136:200]).resize((32, 32), Image.NEAREST)
    np.testing.assert_array_equal(load(edge)["label"][0].numpy(), np.asarray(block))


def test_slide_item_loads_at_the_network_resolution(tmp_path):
    """LoadSlided reads a slide item at its own downsample, its label on the same grid."""
    labels = _stripes(split=100)
    (item,) = annotation_slide_items([_record(tmp_path, "t", labels)], mpp=2.0, num_classes=2, input_mpp=1.0)
    out = LoadSlided(downsample=16.0, mask_key="mask")(item)
    assert out["image"].shape == (3, 75, 100) and out["label"].shape == (1, 75, 100) and out["downsample"] == 2.0
    np.testing.assert_array_equal(out["label"][0].numpy(), labels[1::2, 1::2])


def test_centred_patch_label_is_padding_outside_the_tile(tmp_path):
    """The label of a centred patch is 255 exactly outside the tile and the tile's labels inside it."""
    record = _record(tmp_path, "small", np.zeros((30, 40), np.uint8))
    (item,) = annotation_patch_items([record], patch_size=64, mpp=1.0, num_classes=2, input_mpp=1.0)
    label = LoadSlideRegiond(out_size=(64, 64), mask_key="mask")(item)["label_map"][0].numpy()
    expected = np.full((64, 64), 255)
    expected[17:47, 12:52] = 0
    np.testing.assert_array_equal(label, expected)
