"""Tests of the M-step pools: a dataset whose pools change between rounds, and its ratio batch sampler."""

from __future__ import annotations

import numpy as np
import pytest

from mixsup_monai.rounds import PoolBatchSampler, PoolDataset, PseudoLabelPool, PseudoLabelSet


def _items(tag: str, n: int) -> list[dict]:
    return [{"tag": tag, "i": i} for i in range(n)]


def test_items_are_laid_out_pool_after_pool():
    ds = PoolDataset({"pixel": _items("p", 2), "positive": [], "negative": _items("n", 3)})
    assert len(ds) == 5 and ds.pool_sizes == [2, 0, 3]
    assert [ds.locate(i) for i in range(5)] == [
        ("pixel", 0),
        ("pixel", 1),
        ("negative", 0),
        ("negative", 1),
        ("negative", 2),
    ]
    assert ds[3] == {"tag": "n", "i": 1, "pool": "negative"}
    with pytest.raises(IndexError, match="out of range"):
        ds[5]


def test_set_pools_replaces_named_pools_and_attaches_arrays():
    ds = PoolDataset({"pixel": _items("p", 2), "positive": [], "negative": []}, transform=lambda d: {**d, "seen": True})
    labels = np.arange(3, dtype=np.float16).reshape(3, 1, 1, 1)
    ds.set_pools(PseudoLabelSet(1, {"positive": PseudoLabelPool(_items("y+", 3), {"label": labels})}))
    assert ds.pool_sizes == [2, 3, 0]
    item = ds[4]
    assert item["tag"] == "y+" and float(item["label"].reshape(-1)[0]) == 2.0 and item["seen"]


def test_set_pools_rejects_an_undeclared_pool():
    ds = PoolDataset({"pixel": _items("p", 1)})
    with pytest.raises(KeyError, match=r"unknown pool\(s\) \['positive'\]; declared pools are \['pixel'\]"):
        ds.set_pools({"positive": []})


def test_sampler_keeps_the_ratio_and_follows_new_pools():
    ds = PoolDataset({"pixel": _items("p", 4), "positive": [], "negative": []})
    sampler = PoolBatchSampler(ds, ratio=(2, 1, 7), batch_size=10, num_batches=3, seed=0)
    assert sampler.counts == [10, 0, 0] and len(sampler) == 3  # empty pools: their share goes to pixel labels
    assert all(ds.locate(i)[0] == "pixel" for batch in sampler for i in batch)
    ds.set_pools({"positive": _items("y+", 5), "negative": _items("y-", 50)})
    assert sampler.counts == [2, 1, 7]
    for batch in sampler:
        pools = [ds.locate(i)[0] for i in batch]
        assert (pools.count("pixel"), pools.count("positive"), pools.count("negative")) == (2, 1, 7)


def test_sampler_draws_depend_on_the_epoch_only():
    ds = PoolDataset({"pixel": _items("p", 4), "positive": _items("y+", 5), "negative": _items("y-", 50)})
    a = PoolBatchSampler(ds, num_batches=2, seed=3)
    b = PoolBatchSampler(ds, num_batches=2, seed=3)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    b.set_epoch(5)
    assert list(a) != list(b)


def test_sampler_rejects_a_ratio_of_the_wrong_length():
    ds = PoolDataset({"pixel": _items("p", 4), "negative": []})
    with pytest.raises(ValueError, match=r"ratio \[2, 1, 7\] has 3 entries for the pools \['pixel', 'negative'\]"):
        PoolBatchSampler(ds, ratio=[2, 1, 7])
