"""Tests of the fixed-composition batch sampler (MixSup 2 : 1 : 7 mixing)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

from mixsup_monai.data.mixing_sampler import RatioBatchSampler, apportion

APPORTION_CASES = [
    ("paper_ratio_batch_10", 10, (2, 1, 7), [2, 1, 7]),
    ("paper_ratio_batch_20", 20, (2, 1, 7), [4, 2, 14]),
    ("no_pseudo_positive_batch_9", 9, (2, 0, 7), [2, 0, 7]),
    # 10 * 2/9 = 2.22, 10 * 7/9 = 7.78: floors 2 + 7, the last item to the larger remainder
    ("no_pseudo_positive_batch_10_rounded", 10, (2, 0, 7), [2, 0, 8]),
    # 1, 0.5, 3.5: floors 1, 0, 3; the tie between 0.5 and 0.5 goes to the earlier pool
    ("tie_to_earlier_pool", 5, (2, 1, 7), [1, 1, 3]),
]


@pytest.mark.parametrize("name,total,weights,expected", APPORTION_CASES, ids=[c[0] for c in APPORTION_CASES])
def test_apportion(name, total, weights, expected):
    assert apportion(total, weights) == expected


def _pool_of(index: int, sizes: list[int]) -> int:
    start = 0
    for p, s in enumerate(sizes):
        if start <= index < start + s:
            return p
        start += s
    raise AssertionError(index)


@pytest.mark.parametrize("batch_size,counts", [(10, [2, 1, 7]), (20, [4, 2, 14])], ids=["batch_10", "batch_20"])
def test_every_batch_has_the_composition(batch_size, counts):
    sizes = [5, 3, 40]
    sampler = RatioBatchSampler(sizes, ratio=(2, 1, 7), batch_size=batch_size)
    assert sampler.counts == counts
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        pools = [_pool_of(i, sizes) for i in batch]
        assert pools == [0] * counts[0] + [1] * counts[1] + [2] * counts[2]


def test_default_epoch_draws_every_pool_completely():
    sizes = [5, 3, 40]
    sampler = RatioBatchSampler(sizes, batch_size=10)
    assert len(sampler) == 6  # max(ceil(5/2), ceil(3/1), ceil(40/7)) = 6
    seen = {i for batch in sampler for i in batch}
    assert seen == set(range(48))


def test_small_pool_is_cycled_as_fresh_permutations():
    sampler = RatioBatchSampler([5, 3, 40], batch_size=10)
    pixel = [i for batch in sampler for i in batch[:2]]  # 12 draws of pool 0
    assert sorted(pixel[:5]) == list(range(5)) and sorted(pixel[5:10]) == list(range(5))


def test_deterministic_per_seed_and_epoch():
    def draw(seed, epoch):
        s = RatioBatchSampler([7, 4, 60], seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert draw(0, 0) == draw(0, 0)
    assert draw(0, 1) == draw(0, 1)
    assert draw(0, 0) != draw(0, 1)
    assert draw(0, 0) != draw(1, 0)


def test_large_pool_walks_on_across_epochs():
    sampler = RatioBatchSampler([100], ratio=(1,), batch_size=10, num_batches=3)
    first = [i for b in sampler for i in b]
    sampler.set_epoch(1)
    second = [i for b in sampler for i in b]
    assert len(set(first)) == 30 and not set(first) & set(second)


@pytest.mark.parametrize("num_batches,per_rank", [(6, 3), (5, 3)], ids=["even", "odd_padded"])
def test_ddp_ranks_get_equal_disjoint_shares(num_batches, per_rank):
    sizes = [40, 20, 140]
    ranks = [list(RatioBatchSampler(sizes, num_batches=num_batches, num_replicas=2, rank=r, seed=3)) for r in (0, 1)]
    assert [len(b) for b in ranks] == [per_rank, per_rank]
    assert not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}
    if num_batches % 2 == 0:  # the ranks deal out the single-process sequence
        single = list(RatioBatchSampler(sizes, num_batches=num_batches, seed=3))
        assert sorted(ranks[0] + ranks[1]) == sorted(single)


def test_explicit_index_lists_and_concat_dataset():
    sampler = RatioBatchSampler([[10, 11], [20], [30, 31, 32, 33, 34, 35, 36]], batch_size=10)
    for batch in sampler:
        assert set(batch[:2]) == {10, 11} and batch[2] == 20 and set(batch[3:]) == set(range(30, 37))
    pools = [TensorDataset(torch.full((n,), p)) for p, n in enumerate((4, 2, 21))]
    dataset = ConcatDataset(pools)
    loader = DataLoader(dataset, batch_sampler=RatioBatchSampler.from_concat_dataset(dataset, batch_size=20))
    for (pool_ids,) in loader:
        assert pool_ids.tolist() == [0] * 4 + [1] * 2 + [2] * 14


def test_empty_pool_error_names_the_pool():
    with pytest.raises(ValueError, match=r"positive_pseudo is empty but its ratio is 1.*empty_pool='redistribute'"):
        RatioBatchSampler([5, 0, 40], pool_names=["pixel", "positive_pseudo", "hard_negative"])


def test_empty_pool_redistributed_and_zero_ratio_ablation():
    sampler = RatioBatchSampler([5, 0, 40], batch_size=10, empty_pool="redistribute")
    assert sampler.counts == [2, 0, 8]
    assert all(len(b) == 10 for b in sampler)
    ablation = RatioBatchSampler([5, 0, 40], ratio=(2, 0, 7), batch_size=9)  # y+ ablation, default mode
    assert ablation.counts == [2, 0, 7]


BAD_CASES = [
    (
        "batch_too_small",
        dict(pools=[5, 3, 40], batch_size=3),
        r"pool 1 would get 0 items per batch.*multiple of 10",
    ),
    ("ratio_length", dict(pools=[5, 3], ratio=(2, 1, 7)), r"3 entries for 2 pools"),
    ("negative_ratio", dict(pools=[5, 3], ratio=(2, -1)), r"non-negative"),
    (
        "all_pools_empty",
        dict(pools=[0, 0], ratio=(1, 1), empty_pool="redistribute"),
        r"every pool .* is empty",
    ),
    ("bad_mode", dict(pools=[5], ratio=(1,), empty_pool="redistrbute"), r"redistribute"),
    ("bad_rank", dict(pools=[5], ratio=(1,), num_replicas=2, rank=2), r"0 <= rank < num_replicas"),
    ("mixed_pool_spec", dict(pools=[5, [1, 2]], ratio=(1, 1)), r"not a mixture"),
]


@pytest.mark.parametrize("name,kwargs,match", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_rejects_bad_configuration(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        RatioBatchSampler(**kwargs)
