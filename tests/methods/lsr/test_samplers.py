"""Tests of GroupedBatchSampler: batch composition, determinism, epochs, DDP shares, small labels."""

from __future__ import annotations

import warnings
from collections import Counter

import pytest
import torch

from mixsup_monai.methods.lsr.samplers import GroupedBatchSampler

# 30 blocks with z = 0, 25 with z = 1, 24 with z = 2, 13 with z = 3
LABELS = [0] * 30 + [1] * 25 + [2] * 24 + [3] * 13


def groups_of(batch, group_size):
    return [batch[i : i + group_size] for i in range(0, len(batch), group_size)]


@pytest.mark.parametrize(
    ("case", "kwargs", "n_batches"),
    [
        # groups per label (drop_last): 2 + 2 + 2 + 1 = 7 -> 3 batches of 2 groups
        ("drop_last", {"group_size": 12, "groups_per_batch": 2}, 3),
        # ceil: 3 + 3 + 2 + 2 = 10 -> 5 batches
        ("keep_last", {"group_size": 12, "groups_per_batch": 2, "drop_last": False}, 5),
        # 6 + 5 + 4 + 2 = 17 -> 5 batches of 3 groups
        ("small_groups", {"group_size": 5, "groups_per_batch": 3}, 5),
    ],
)
def test_every_batch_is_groups_of_one_label_with_distinct_labels(case, kwargs, n_batches):
    sampler = GroupedBatchSampler(LABELS, seed=3, **kwargs)
    g, p = kwargs["group_size"], kwargs["groups_per_batch"]
    batches = list(sampler)
    assert len(batches) == len(sampler) == n_batches, case
    for batch in batches:
        assert len(batch) == g * p and all(isinstance(i, int) for i in batch)
        groups = groups_of(batch, g)
        labels = [{LABELS[i] for i in group} for group in groups]
        assert all(len(s) == 1 for s in labels)  # one label per group
        assert len(set().union(*labels)) == p  # 4 labels available: groups of a batch differ
        assert all(len(set(group)) == g for group in groups)  # n >= G: distinct members


def test_drop_last_false_covers_every_index():
    sampler = GroupedBatchSampler(LABELS, group_size=12, groups_per_batch=2, drop_last=False)
    seen = {i for batch in sampler for i in batch}
    assert seen == set(range(len(LABELS)))


def test_same_seed_and_epoch_give_same_batches_and_set_epoch_changes_them():
    a = GroupedBatchSampler(LABELS, group_size=6, seed=11)
    b = GroupedBatchSampler(LABELS, group_size=6, seed=11)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(GroupedBatchSampler(LABELS, group_size=6, seed=12)) != first


def test_no_shuffle_is_ordered():
    sampler = GroupedBatchSampler([0] * 4 + [1] * 4, group_size=2, groups_per_batch=2, shuffle=False)
    assert list(sampler) == [[0, 1, 4, 5], [2, 3, 6, 7]]


@pytest.mark.parametrize("drop_last", [True, False])
def test_ranks_get_disjoint_equal_shares(drop_last):
    kwargs = {"group_size": 4, "groups_per_batch": 2, "seed": 5, "drop_last": drop_last}
    full = list(GroupedBatchSampler(LABELS, num_replicas=1, rank=0, **kwargs))
    shares = [list(GroupedBatchSampler(LABELS, num_replicas=3, rank=r, **kwargs)) for r in range(3)]
    lengths = {len(s) for s in shares}
    assert len(lengths) == 1
    assert lengths.pop() == len(GroupedBatchSampler(LABELS, num_replicas=3, rank=0, **kwargs))
    union = [tuple(b) for s in shares for b in s]
    if drop_last:  # a partition of the first len(full) // 3 * 3 batches
        assert len(set(union)) == len(union)
        assert Counter(union) == Counter(tuple(b) for b in full[: len(full) // 3 * 3])
    else:  # every batch, the list padded by repeating its first batches
        assert set(union) == {tuple(b) for b in full}


def test_defaults_to_single_process_without_distributed():
    assert not (torch.distributed.is_available() and torch.distributed.is_initialized())
    sampler = GroupedBatchSampler(LABELS)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)


def test_small_labels_sampled_with_replacement_and_singletons_skipped():
    labels = [0] * 12 + [1] * 5 + [2]  # z = 1 has fewer members than a group, z = 2 one member
    with pytest.warns(UserWarning, match=r"label\(s\) \[2\] have fewer than min_label_size = 2"):
        sampler = GroupedBatchSampler(labels, group_size=12, groups_per_batch=2)
    (batch,) = list(sampler)
    small = next(g for g in groups_of(batch, 12) if labels[g[0]] == 1)
    assert {labels[i] for i in small} == {1}
    assert set(small) == {12, 13, 14, 15, 16}  # every member, repeated as evenly as possible
    assert max(Counter(small).values()) - min(Counter(small).values()) <= 1
    assert 17 not in batch


def test_dropped_left_over_group_is_not_always_the_same_label():
    labels = [0] * 24 + [1] * 24 + [2] * 12  # 5 groups of 12, batches of 2: one group dropped per epoch
    sampler = GroupedBatchSampler(labels, group_size=12, groups_per_batch=2)
    counts = Counter()
    for epoch in range(40):
        sampler.set_epoch(epoch)
        counts.update(labels[batch[k * 12]] for batch in sampler for k in range(2))
    assert counts[2] > 0 and counts[0] < 80 and counts[1] < 80


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"group_labels": [0] * 4, "group_size": 0}, r"group_size = 0: expected an integer >= 1"),
        ({"group_labels": [0, 1, 2]}, r"no label has >= min_label_size = 2 members"),
        ({"group_labels": [0] * 24, "num_replicas": 2, "rank": 2}, r"rank = 2: expected an integer in \[0, "),
        (
            {"group_labels": [0] * 24, "num_replicas": 4},
            r"make 1 batch\(es\) of 2 groups, fewer than num_replicas",
        ),
        ({"group_labels": [0.5, 1.5]}, r"expected a 1-D sequence of integers"),
    ],
)
def test_rejects_bad_arguments(kwargs, pattern):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=pattern):
            GroupedBatchSampler(**kwargs)


def test_works_as_dataloader_batch_sampler():
    dataset = torch.utils.data.TensorDataset(torch.arange(len(LABELS)), torch.tensor(LABELS))
    sampler = GroupedBatchSampler(LABELS, group_size=6, groups_per_batch=2)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
    idx, z = next(iter(loader))
    assert idx.shape == (12,) and len(set(z[:6].tolist())) == 1 and len(set(z[6:].tolist())) == 1
