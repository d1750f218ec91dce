"""Batch sampler giving every batch a fixed composition over several pools (MixSup's 2 : 1 : 7)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist
from monai.utils import StrEnum, look_up_option
from torch.utils.data import ConcatDataset, Sampler

__all__ = ["EmptyPoolMode", "RatioBatchSampler", "apportion"]


class EmptyPoolMode(StrEnum):
    """What :class:`RatioBatchSampler` does with an empty pool whose ratio is non-zero."""

    ERROR = "error"
    REDISTRIBUTE = "redistribute"


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest-remainder method).

    Exact when ``total * w / sum(w)`` are integers (``apportion(10, (2, 1, 7)) == [2, 1, 7]``,
    ``apportion(20, (2, 1, 7)) == [4, 2, 14]``); otherwise each share is rounded down and the
    remaining items go to the largest fractional parts, ties to the earlier pool
    (``apportion(10, (2, 0, 7)) == [2, 0, 8]``).
    """
    w = [float(x) for x in weights]
    s = sum(w)
    if s <= 0:
        raise ValueError(f"weights must have a positive sum, got {list(weights)}.")
    exact = [total * x / s for x in w]
    counts = [math.floor(e + 1e-9) for e in exact]
    order = sorted(range(len(w)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


class RatioBatchSampler(Sampler[list[int]]):
    """Batches of fixed composition over the pools of a concatenated dataset (Li et al., M-step, R = 2:1:7).

    Every batch holds exactly ``counts[p]`` indices of pool ``p`` (pools in order), where
    ``counts = apportion(batch_size, ratio)``: the ratio scaled to the batch size, e.g. batch 10
    -> 2 : 1 : 7 and batch 20 -> 4 : 2 : 14. When ``batch_size`` is not a multiple of
    ``sum(ratio)`` the shares are rounded by the largest-remainder method (see :func:`apportion`;
    the result is in :attr:`counts`), and a pool with a non-zero ratio that would get 0 items per
    batch is an error.

    Each pool is drawn from its own endless stream of independent random permutations, cut into
    consecutive epochs: a small pool (the pixel labels) is cycled and reshuffled, a large pool is
    walked through over successive epochs, and every draw depends only on ``(seed, pool, epoch)``
    -- call :meth:`set_epoch` at the start of each epoch, as with ``DistributedSampler``.

    DDP: ``batch_size`` is the per-process batch. The global sequence of batches is padded (by
    continuing the streams) to a multiple of ``num_replicas`` and dealt round-robin, so every rank
    gets the same number of batches and no batch is shared between ranks (within an epoch the same
    index appears twice only once its pool has been exhausted and is cycled).

    Args:
        pools: pool sizes (``[len(pixel), len(pseudo), len(hard_negative)]``, pools laid out one after
            another as in ``ConcatDataset``), or explicit lists of dataset indices, one per pool.
        ratio: items per pool per ``sum(ratio)`` items (paper: ``(2, 1, 7)``; ``(2, 0, 7)`` = no ``y_p+``).
        batch_size: items per batch (per process under DDP).
        num_batches: batches per epoch (all ranks together); default: enough for every pool with a
            non-zero share to be drawn completely at least once, ``max_p ceil(len_p / counts_p)``.
        seed: base seed of all draws (the same on every rank).
        num_replicas: number of DDP processes; default: world size if ``torch.distributed`` is
            initialised, else 1.
        rank: rank of this process; default: current rank, else 0.
        empty_pool: ``"error"`` (default) raises a ``ValueError`` naming an empty pool whose ratio is
            non-zero; ``"redistribute"`` gives its share to the other pools in proportion to their
            ratios (an E-step that kept no positive patch still trains on pixel labels and hard
            negatives).
        pool_names: names used in error messages, default ``"pool 0"``, ``"pool 1"``, ...

    Example::

        >>> ds = ConcatDataset([pixel_ds, positive_ds, hard_negative_ds])
        >>> sampler = RatioBatchSampler.from_concat_dataset(ds, ratio=(2, 1, 7), batch_size=10)
        >>> loader = DataLoader(ds, batch_sampler=sampler, num_workers=2)
        >>> for epoch in range(30):
        ...     sampler.set_epoch(epoch)
        ...     for batch in loader: ...
    """

    def __init__(
        self,
        pools: Sequence[int] | Sequence[Sequence[int]],
        ratio: Sequence[float] = (2, 1, 7),
        batch_size: int = 10,
        num_batches: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        empty_pool: EmptyPoolMode | str = EmptyPoolMode.ERROR,
        pool_names: Sequence[str] | None = None,
    ) -> None:
        self.pools = self._as_pools(pools)
        n_pools = len(self.pools)
        self.pool_names = [f"pool {i}" for i in range(n_pools)] if pool_names is None else list(pool_names)
        if len(self.pool_names) != n_pools:
            raise ValueError(f"pool_names has {len(self.pool_names)} names for {n_pools} pools.")
        self.ratio = [float(r) for r in ratio]
        if len(self.ratio) != n_pools:
            raise ValueError(f"ratio {list(ratio)} has {len(self.ratio)} entries for {n_pools} pools.")
        if any(r < 0 or not math.isfinite(r) for r in self.ratio) or sum(self.ratio) <= 0:
            raise ValueError(f"ratio must be non-negative with a positive sum, got {list(ratio)}.")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        self.batch_size = int(batch_size)
        self.empty_pool = look_up_option(empty_pool, EmptyPoolMode)
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}.")

        weights = list(self.ratio)
        for i, (pool, r) in enumerate(zip(self.pools, self.ratio)):
            if r > 0 and len(pool) == 0:
                if self.empty_pool == EmptyPoolMode.ERROR:
                    raise ValueError(
                        f"{self.pool_names[i]} is empty but its ratio is {ratio[i]} (ratio {list(ratio)}); "
                        f"fill it, set its ratio to 0, or pass empty_pool='redistribute'."
                    )
                weights[i] = 0.0
        if sum(weights) <= 0:
            raise ValueError(f"every pool with a non-zero ratio is empty (sizes {[len(p) for p in self.pools]}).")
        self.counts = apportion(self.batch_size, weights)
        for i, (c, w) in enumerate(zip(self.counts, weights)):
            if w > 0 and c == 0:
                raise ValueError(
                    f"batch_size {self.batch_size} is too small for ratio {list(ratio)}: "
                    f"{self.pool_names[i]} would get 0 items per batch; use a multiple of "
                    f"{self._sum_text(weights)}."
                )

        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}.")
        self.num_replicas, self.rank = int(num_replicas), int(rank)

        if num_batches is None:
            num_batches = max(math.ceil(len(p) / c) for p, c in zip(self.pools, self.counts) if c > 0)
        if int(num_batches) != num_batches or num_batches < 1:
            raise ValueError(f"num_batches must be a positive integer, got {num_batches}.")
        self.num_batches = int(num_batches)
        self.batches_per_replica = math.ceil(self.num_batches / self.num_replicas)
        self.epoch = 0

    @classmethod
    def from_concat_dataset(cls, dataset: ConcatDataset, **kwargs: Any) -> RatioBatchSampler:
        """Sampler whose pools are the member datasets of ``dataset``, in order."""
        return cls([len(d) for d in dataset.datasets], **kwargs)

    @staticmethod
    def _sum_text(weights: Sequence[float]) -> str:
        s = sum(weights)
        return str(int(s)) if float(s).is_integer() else f"{s:g}"

    @staticmethod
    def _as_pools(pools: Sequence[int] | Sequence[Sequence[int]]) -> list[np.ndarray]:
        items = list(pools)
        if not items:
            raise ValueError("pools must contain at least one pool.")
        if all(isinstance(p, (int, np.integer)) for p in items):
            sizes = [int(p) for p in items]
            if any(s < 0 for s in sizes):
                raise ValueError(f"pool sizes must be >= 0, got {sizes}.")
            offsets = np.cumsum([0] + sizes[:-1])
            return [np.arange(o, o + s, dtype=np.int64) for o, s in zip(offsets, sizes)]
        if any(isinstance(p, (int, np.integer)) for p in items):
            raise ValueError("pools must be all sizes (ints) or all index lists, not a mixture.")
        out = [np.asarray(p, dtype=np.int64).reshape(-1) for p in items]
        for i, p in enumerate(out):
            if p.size and p.min() < 0:
                raise ValueError(f"pool {i} holds a negative dataset index ({int(p.min())}).")
        return out

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws :meth:`__iter__` yields (deterministic per ``(seed, epoch)``)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}.")
        self.epoch = int(epoch)

    def _stream(self, pool: int, start: int, length: int) -> np.ndarray:
        """Items ``[start, start + length)`` of pool ``pool``'s endless stream of permutations."""
        indices = self.pools[pool]
        n = len(indices)
        if length == 0:
            return np.zeros(0, dtype=np.int64)
        first, last = start // n, (start + length - 1) // n
        blocks = [np.random.default_rng((self.seed, pool, b)).permutation(n) for b in range(first, last + 1)]
        positions = np.concatenate(blocks)[start - first * n : start - first * n + length]
        return indices[positions]

    def _epoch_batches(self) -> np.ndarray:
        """All batches of the current epoch (all ranks), shape ``(total_batches, batch_size)``."""
        total = self.batches_per_replica * self.num_replicas
        parts = []
        for p, c in enumerate(self.counts):
            if c == 0:
                continue
            need = total * c
            parts.append(self._stream(p, self.epoch * need, need).reshape(total, c))
        return np.concatenate(parts, axis=1)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._epoch_batches()[self.rank :: self.num_replicas]
        for row in batches:
            yield [int(i) for i in row]

    def __len__(self) -> int:
        return self.batches_per_replica
