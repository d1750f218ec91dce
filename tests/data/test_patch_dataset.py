"""Tests of mixsup_monai.data.patch_dataset: items, batched reads, collation, workers, per-process slides."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mixsup_monai.data.patch_dataset import PatchBatchSampler, WSIPatchDataset, collate_patches
from mixsup_monai.wsi import open_slide, write_pyramidal_tiff


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> list[str]:
    """Two small JPEG pyramids with different textures (1024 x 768 and 768 x 768)."""
    folder = tmp_path_factory.mktemp("patch_dataset")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(768, 1024), (768, 768)]):
        yy, xx = np.mgrid[0:h, 0:w]
        rgb = np.stack([xx // 4 % 256, yy // 3 % 256, (xx + yy) // 8 % 256], -1).astype(np.uint8)
        rgb = np.clip(rgb + rng.integers(0, 20, rgb.shape), 0, 255).astype(np.uint8)
        path = folder / f"s{i}.tif"
        write_pyramidal_tiff(path, rgb, mpp=0.5, tile_size=256)
        paths.append(str(path))
    return paths


def _items(slides: list[str]) -> list[dict]:
    items = []
    for k, path in enumerate(slides):
        for j, (x, y) in enumerate([(0, 0), (128, 64), (500, 300), (256, 512), (16, 400)]):
            items.append(
                {"image": path, "location": [x, y], "size": [128, 96], "level": j % 2, "label": k, "id": f"{k}-{j}"}
            )
    return items


def _truth(item: dict) -> np.ndarray:
    with open_slide(item["image"]) as slide:
        return slide.read_region(item["location"], item["size"], item["level"]).transpose(2, 0, 1)


def test_getitem_returns_channel_first_uint8_and_passes_keys(slides):
    items = _items(slides)
    ds = WSIPatchDataset(items)
    out = ds[7]
    assert out["image"].shape == (3, 96, 128) and out["image"].dtype == torch.uint8
    np.testing.assert_array_equal(out["image"].numpy(), _truth(items[7]))
    assert out["label"] == 1 and out["id"] == "1-2" and out["level"] == 0
    np.testing.assert_array_equal(out["location"], [500, 300])
    assert out["location"].dtype == np.int64


def test_getitems_groups_slides_and_keeps_order(slides):
    items = _items(slides)
    ds = WSIPatchDataset(items)
    order = [9, 0, 5, 3, 8, 1, 7]
    batch = ds.__getitems__(order)
    assert [b["id"] for b in batch] == [items[i]["id"] for i in order]
    for i, b in zip(order, batch):
        np.testing.assert_array_equal(b["image"].numpy(), _truth(items[i]))


def test_dataloader_with_collate_patches_makes_no_copy(slides):
    items = _items(slides)
    loader = DataLoader(WSIPatchDataset(items), batch_size=4, collate_fn=collate_patches)
    batches = list(loader)
    assert [tuple(b["image"].shape) for b in batches] == [(4, 3, 96, 128), (4, 3, 96, 128), (2, 3, 96, 128)]
    first = batches[0]
    assert first["image"].is_contiguous(memory_format=torch.channels_last)
    assert first["location"].shape == (4, 2) and first["label"].tolist() == [0, 0, 0, 0]
    assert first["id"] == ["0-0", "0-1", "0-2", "0-3"]
    stacked = torch.cat([b["image"] for b in batches])
    np.testing.assert_array_equal(stacked.numpy(), np.stack([_truth(item) for item in items]))


def test_default_collate_and_contiguous_option(slides):
    items = _items(slides)
    plain = next(iter(DataLoader(WSIPatchDataset(items), batch_size=5)))
    contiguous = next(
        iter(DataLoader(WSIPatchDataset(items, contiguous=True), batch_size=5, collate_fn=collate_patches))
    )
    assert contiguous["image"].is_contiguous()
    assert WSIPatchDataset(items, contiguous=True)[0]["image"].is_contiguous()
    torch.testing.assert_close(plain["image"], contiguous["image"], rtol=0, atol=0)


def test_batches_are_not_overwritten_by_the_buffer_pool(slides):
    items = _items(slides)
    loader = DataLoader(WSIPatchDataset(items), batch_size=2, collate_fn=collate_patches)
    kept = [b["image"] for b in loader]  # every batch stays alive while the next ones are read
    assert len({t.untyped_storage().data_ptr() for t in kept}) == len(kept)
    for k, t in enumerate(kept):
        np.testing.assert_array_equal(t.numpy(), np.stack([_truth(item) for item in items[2 * k : 2 * k + 2]]))


def test_buffers_are_reused_once_released(slides):
    ds = WSIPatchDataset(_items(slides)[:4])
    ptr = collate_patches(ds.__getitems__([0, 1]))["image"].untyped_storage().data_ptr()
    assert collate_patches(ds.__getitems__([2, 3]))["image"].untyped_storage().data_ptr() == ptr


def test_float_output_in_unit_range(slides):
    items = _items(slides)
    ds = WSIPatchDataset(items, dtype=torch.float32)
    batch = collate_patches(ds.__getitems__([0, 6]))
    assert batch["image"].dtype == torch.float32
    np.testing.assert_allclose(batch["image"][1].numpy(), _truth(items[6]) / 255.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ds[6]["image"].numpy(), _truth(items[6]) / 255.0, rtol=0, atol=1e-6)


def test_transform_is_applied_to_each_item(slides):
    def transform(d):
        d = dict(d)
        d["mean"] = float(d["image"].float().mean())
        return d

    items = _items(slides)
    batch = WSIPatchDataset(items, transform=transform).__getitems__([0, 1])
    assert batch[0]["mean"] == pytest.approx(float(_truth(items[0]).mean()))


def test_mixed_sizes_in_one_batch(slides):
    items = [
        {"image": slides[0], "location": [0, 0], "size": [64, 64], "level": 0},
        {"image": slides[1], "location": [32, 32], "size": [32, 48], "level": 1},
    ]
    out = WSIPatchDataset(items).__getitems__([0, 1])
    assert out[0]["image"].shape == (3, 64, 64) and out[1]["image"].shape == (3, 48, 32)
    np.testing.assert_array_equal(out[1]["image"].numpy(), _truth(items[1]))


def test_fork_workers_read_the_same_pixels(slides):
    items = _items(slides)
    ds = WSIPatchDataset(items)
    ds[0]  # a handle opened in the parent must not be used by the forked children
    loader = DataLoader(ds, batch_size=3, num_workers=2, multiprocessing_context="fork", collate_fn=collate_patches)
    images = torch.cat([b["image"] for b in loader])
    np.testing.assert_array_equal(images.numpy(), np.stack([_truth(item) for item in items]))


def test_slides_reopened_per_process_and_pickled_without_handles(slides):
    ds = WSIPatchDataset(_items(slides))
    ds[0]
    first = ds._slides[(slides[0], None)]
    ds._pid = -1  # as seen from a forked child
    ds[0]
    assert ds._slides[(slides[0], None)] is not first
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._slides == {} and len(clone) == len(ds)
    np.testing.assert_array_equal(clone[3]["image"].numpy(), ds[3]["image"].numpy())


def test_lru_closes_old_slides(slides):
    ds = WSIPatchDataset(_items(slides), max_open_slides=1)
    ds[0]
    ds[5]
    assert list(ds._slides) == [(slides[1], None)]


def test_rejects_items_without_location():
    with pytest.raises(ValueError, match=r"item 0 lacks \['location'\]"):
        WSIPatchDataset([{"image": "a.tif", "size": [8, 8]}])
    with pytest.raises(ValueError, match="dtype must be torch.uint8 or a floating dtype"):
        WSIPatchDataset([{"image": "a.tif", "location": [0, 0], "size": [8, 8]}], dtype=torch.int32)


def test_batch_sampler_reads_one_batch_ahead(slides):
    items = _items(slides)
    ds = WSIPatchDataset(items)
    sampler = PatchBatchSampler(ds, batch_size=3)
    assert list(sampler) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]] and len(sampler) == 4
    ds._pending.clear()
    batches = iter(DataLoader(ds, batch_sampler=sampler, collate_fn=collate_patches))
    first = next(batches)
    assert list(ds._pending) == [(3, 4, 5)]  # batch 2 is being read while batch 1 is used
    images = torch.cat([first["image"], *(b["image"] for b in batches)])
    np.testing.assert_array_equal(images.numpy(), np.stack([_truth(item) for item in items]))
    assert ds._pending == {}


def test_shuffled_batch_sampler_covers_every_item_once(slides):
    ds = WSIPatchDataset(_items(slides))
    sampler = PatchBatchSampler(
        ds, batch_size=4, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0)
    )
    batches = list(sampler)
    assert len(batches) == 2 and all(len(b) == 4 for b in batches)
    assert len({i for b in batches for i in b}) == 8


def test_prefetch_with_slide_eviction_keeps_pixels_right(slides):
    items = _items(slides)
    order = [0, 5, 1, 6, 2, 7, 3, 8, 4, 9]  # alternate the two slides with one slide open at a time
    ds = WSIPatchDataset([items[i] for i in order], max_open_slides=1)
    loader = DataLoader(ds, batch_sampler=PatchBatchSampler(ds, batch_size=1), collate_fn=collate_patches)
    images = torch.cat([b["image"] for b in loader])
    np.testing.assert_array_equal(images.numpy(), np.stack([_truth(items[i]) for i in order]))
    assert len(ds._slides) == 1 and ds._retired == []
