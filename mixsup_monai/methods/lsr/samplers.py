"""Batch samplers: groups of blocks sharing a low-resolution label (label super-resolution), DDP-ready."""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["GroupedBatchSampler"]


def _default_replicas_and_rank(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """num_replicas / rank from ``torch.distributed`` when initialised, else (1, 0)."""
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if num_replicas < 1:
        raise ValueError(f"num_replicas = {num_replicas}: expected >= 1")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank = {rank}: expected an integer in [0, num_replicas = {num_replicas})")
    return num_replicas, rank


class GroupedBatchSampler(Sampler[list[int]]):
    """Yield batches made of groups of dataset indices that share a label (e.g. the low-resolution label z).

    The inter- and intra+inter-instance LSR losses need several blocks with the same z in a batch (Zhao et
    al., "Label super resolution with inter-instance loss", Sec. 3.1.5 / 3.2.3: groups of 10–15 blocks,
    2 groups per batch). Each batch is a flat list of ``groups_per_batch × group_size`` indices, group after
    group; use it as ``DataLoader(dataset, batch_sampler=sampler)``.

    Per epoch, for each label with n members (indices shuffled when ``shuffle``):

    * n ≥ ``group_size``: ⌊n / G⌋ groups of G distinct members. The n mod G left-over members are dropped
      when ``drop_last`` (a different subset each epoch when shuffling), otherwise they form one more group
      topped up with other members of the label drawn without replacement (still G distinct indices).
    * ``min_label_size`` ≤ n < G: one group holding every member, topped up **with replacement** (members
      repeated as evenly as possible) to G indices. Repeated blocks lower the group's between-block variance;
      prefer a smaller ``group_size`` when many labels are this small.
    * n < ``min_label_size`` (default 2: a lone block has no inter-instance variance): the label is skipped,
      with a warning at construction.

    With ``drop_last``, the groups that cannot fill a last batch (number of groups mod ``groups_per_batch``)
    are dropped first, chosen at random among all groups. The others are packed into batches so that the
    groups of a batch have different labels whenever enough labels still have groups left (greedy: the
    labels with most remaining groups first, ties broken at random); otherwise a batch repeats a label (the
    loss then merges those groups, as they share z, unless it is given ``group_ids``). Complete batches are
    then shuffled; without ``drop_last`` a final batch with fewer groups may come last.

    Deterministic per (``seed``, epoch): call :meth:`set_epoch` each epoch (as with ``DistributedSampler``).
    Under DDP every rank builds the same batch list and takes every ``num_replicas``-th batch from ``rank``:
    disjoint, equal-length shares; with ``drop_last`` the batches that do not divide evenly among ranks are
    dropped, otherwise the list is padded by repeating its first batches.

    Args:
        group_labels: one integer label per dataset index (e.g. the z of each block).
        group_size: G, indices per group.
        groups_per_batch: groups per batch (paper: 2).
        shuffle: shuffle members, groups and batches each epoch.
        seed: random seed, shared by all ranks.
        drop_last: see above (per-label left-overs, the incomplete last batch, the DDP remainder).
        num_replicas: number of DDP processes (default: ``torch.distributed`` world size, or 1).
        rank: this process's rank (default: ``torch.distributed`` rank, or 0).
        min_label_size: labels with fewer members are skipped.

    Raises:
        ValueError: invalid sizes, no label large enough, or no batch for a rank.
    """

    def __init__(
        self,
        group_labels: Sequence[int] | np.ndarray | torch.Tensor,
        group_size: int = 12,
        groups_per_batch: int = 2,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
        min_label_size: int = 2,
    ) -> None:
        for name, value in (("group_size", group_size), ("groups_per_batch", groups_per_batch)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} = {value!r}: expected an integer >= 1")
        if min_label_size < 1:
            raise ValueError(f"min_label_size = {min_label_size}: expected an integer >= 1")
        labels = np.asarray(group_labels.cpu() if isinstance(group_labels, torch.Tensor) else group_labels)
        if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
            raise ValueError(
                f"group_labels has shape {labels.shape} and dtype {labels.dtype}: expected a 1-D sequence of integers"
            )
        self.group_size = int(group_size)
        self.groups_per_batch = int(groups_per_batch)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.min_label_size = int(min_label_size)
        self.num_replicas, self.rank = _default_replicas_and_rank(num_replicas, rank)
        self.epoch = 0

        self.members: dict[int, np.ndarray] = {}
        self.skipped_labels: list[int] = []
        for label in np.unique(labels).tolist():
            idx = np.flatnonzero(labels == label)
            if idx.size < self.min_label_size:
                self.skipped_labels.append(int(label))
            else:
                self.members[int(label)] = idx
        if self.skipped_labels:
            warnings.warn(
                f"GroupedBatchSampler: label(s) {self.skipped_labels} have fewer than min_label_size = "
                f"{self.min_label_size} members and are skipped",
                stacklevel=2,
            )
        if not self.members:
            raise ValueError(
                f"GroupedBatchSampler: no label has >= min_label_size = {self.min_label_size} members "
                f"({labels.size} indices); nothing to batch"
            )
        self.num_groups = sum(self._groups_of(len(m)) for m in self.members.values())
        p = self.groups_per_batch
        self.total_batches = self.num_groups // p if self.drop_last else math.ceil(self.num_groups / p)
        r = self.num_replicas
        self.num_batches = self.total_batches // r if self.drop_last else math.ceil(self.total_batches / r)
        if self.num_batches == 0:
            raise ValueError(
                f"GroupedBatchSampler: {self.num_groups} group(s) of {self.group_size} make "
                f"{self.total_batches} batch(es) of {p} groups, fewer than num_replicas = {r}; lower "
                "group_size or groups_per_batch, or set drop_last=False"
            )

    @property
    def batch_size(self) -> int:
        """Indices per complete batch: groups_per_batch × group_size."""
        return self.groups_per_batch * self.group_size

    def _groups_of(self, n: int) -> int:
        if n < self.group_size:
            return 1
        return n // self.group_size if self.drop_last else math.ceil(n / self.group_size)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch: the (seed, epoch) pair fixes the batches; call before each epoch's iteration."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        return self.num_batches

    def _label_groups(self, members: np.ndarray, rng: np.random.Generator | None) -> list[np.ndarray]:
        g, n = self.group_size, members.size
        perm = rng.permutation(members) if rng is not None else members
        if n < g:  # every member once, then repeats as evenly as possible
            reps = [perm] + [
                rng.permutation(members) if rng is not None else members for _ in range(math.ceil(g / n) - 1)
            ]
            return [np.concatenate(reps)[:g]]
        groups = [perm[i * g : (i + 1) * g] for i in range(n // g)]
        rem = n % g
        if rem and not self.drop_last:
            used = perm[: n - rem]
            extra = rng.choice(used, size=g - rem, replace=False) if rng is not None else used[: g - rem]
            groups.append(np.concatenate([perm[n - rem :], extra]))
        return groups

    def _all_batches(self) -> list[list[int]]:
        """Every batch of the epoch, before the split among ranks."""
        rng = np.random.default_rng([self.seed, self.epoch]) if self.shuffle else None
        queues = {label: deque(self._label_groups(m, rng)) for label, m in self.members.items()}
        labels = sorted(queues)
        p = self.groups_per_batch
        if self.drop_last and self.num_groups % p:
            # drop the groups that cannot fill a batch before packing, chosen uniformly at random (without
            # shuffling: from the labels with most groups), so that no label is always the one left out
            owners = [lab for lab in labels for _ in range(len(queues[lab]))]
            if rng is not None:
                drop = rng.choice(len(owners), size=self.num_groups % p, replace=False)
                for k in sorted(drop.tolist(), reverse=True):
                    queue = queues[owners[k]]
                    del queue[k - owners.index(owners[k])]
            else:
                for _ in range(self.num_groups % p):
                    queues[max(labels, key=lambda lab: (len(queues[lab]), -lab))].pop()
        complete: list[list[int]] = []
        incomplete: list[list[int]] = []
        while True:
            # tie-break among labels with as many remaining groups: random, or by label without shuffling
            tie = rng.random(len(labels)) if rng is not None else -np.arange(len(labels))
            picked: list[np.ndarray] = []
            used: set[int] = set()
            for _ in range(p):
                cands = [(len(queues[lab]), tie[i], lab) for i, lab in enumerate(labels) if queues[lab]]
                if not cands:
                    break
                fresh = [c for c in cands if c[2] not in used]
                label = max(fresh or cands)[2]
                used.add(label)
                picked.append(queues[label].popleft())
            if not picked:
                break
            indices = [int(i) for i in np.concatenate(picked)]
            (complete if len(picked) == p else incomplete).append(indices)
        if rng is not None:
            complete = [complete[i] for i in rng.permutation(len(complete))]
        return complete if self.drop_last else complete + incomplete

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        r = self.num_replicas
        total = self.num_batches * r
        if len(batches) < total:  # drop_last=False: pad by repeating from the start
            batches = batches + [batches[i % len(batches)] for i in range(total - len(batches))]
        yield from batches[self.rank : total : r]
