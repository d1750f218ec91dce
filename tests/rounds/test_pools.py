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


def test_data_items_join_the_first_pool_after_its_own_items():
    """The items of ``data_items(data)`` follow the first pool's own items; the other pools are untouched."""
    seen = []

    def data_items(data):
        seen.append(data)
        return [{"tag": "a", "i": r["n"]} for r in data]

    records = ({"n": 7}, {"n": 8})
    ds = PoolDataset({"pixel": _items("p", 2), "negative": _items("n", 1)}, data=records, data_items=data_items)
    assert seen == [list(records)] and ds.pool_sizes == [4, 1]
    assert [ds[i]["tag"] for i in range(5)] == ["p", "p", "a", "a", "n"]
    assert ds[3] == {"tag": "a", "i": 8, "pool": "pixel"}


def test_data_items_join_the_named_pool():
    """``data_pool`` names the pool the data's items are appended to."""
    ds = PoolDataset(
        {"pixel": _items("p", 1), "positive": _items("y+", 1), "negative": []},
        data=[{"n": 0}],
        data_pool="positive",
        data_items=lambda data: _items("a", 2 * len(data)),
    )
    assert ds.pool_sizes == [1, 3, 0]
    assert [ds.locate(i) for i in (1, 3)] == [("positive", 0), ("positive", 2)] and ds[3]["tag"] == "a"


def test_no_data_needs_no_data_items():
    """Without data (None or []) the pools are the declared ones and ``data_items`` is not called."""

    def data_items(data):
        raise AssertionError("called without data")

    for data in (None, []):
        ds = PoolDataset({"pixel": _items("p", 2)}, data=data, data_items=data_items)
        assert ds.pool_sizes == [2]


def test_data_with_an_unknown_pool_or_without_data_items_is_refused():
    """Data for an undeclared pool is a KeyError naming it; data without ``data_items`` a ValueError."""
    pools = {"pixel": _items("p", 1), "negative": []}
    with pytest.raises(KeyError, match=r"data_pool 'positive' is not a declared pool \['pixel', 'negative'\]"):
        PoolDataset(pools, data=[{"n": 0}], data_pool="positive", data_items=lambda data: [])
    with pytest.raises(ValueError, match="given without data_items"):
        PoolDataset(pools, data=[{"n": 0}])
    labels = np.zeros((1, 1, 1, 1), np.float16)
    with pytest.raises(TypeError, match="holds pseudo labels"):
        PoolDataset({"y": PseudoLabelPool(_items("y", 1), {"label": labels})}, data=[{"n": 0}], data_items=list)
