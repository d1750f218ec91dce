"""Training data of the M-step: named pools (pixel labels, pseudo labels, ...) replaced between rounds."""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence

from monai.transforms import apply_transform
from torch.utils.data import Dataset

from mixsup_monai.data.mixing_sampler import EmptyPoolMode, RatioBatchSampler
from mixsup_monai.rounds.store import PseudoLabelPool, PseudoLabelSet

__all__ = ["PoolDataset", "PoolBatchSampler"]

logger = logging.getLogger(__name__)


def _as_pool(name: str, value: PseudoLabelPool | Sequence[Mapping]) -> PseudoLabelPool:
    if isinstance(value, PseudoLabelPool):
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"pool {name!r}: expected a PseudoLabelPool or a list of item dicts, got {type(value).__name__}"
        )
    return PseudoLabelPool(items=[dict(v) for v in value])


def _with_data(pools: Mapping, data: list, pool: str, data_items: Callable | None) -> dict:
    """``pools`` with the items of the labelled-tile records ``data`` added to pool ``pool``."""
    if data_items is None:
        raise ValueError("PoolDataset: data (labelled-tile records) given without data_items to read them")
    if isinstance(pools[pool], PseudoLabelPool):
        raise TypeError(f"PoolDataset: data_pool {pool!r} holds pseudo labels; data joins a pool of items")
    items = list(data_items(data))
    logger.info("pool %r: %d items of %d labelled tile(s) join its %d", pool, len(items), len(data), len(pools[pool]))
    return {**pools, pool: [*pools[pool], *items]}


class PoolDataset(Dataset):
    """Patches from several named pools laid out one after another, like ``ConcatDataset``.

    The pools are declared once, in order (MixSup: ``pixel``, ``positive``, ``negative`` -- the order of
    the 2 : 1 : 7 ratio); the round runner replaces the pseudo-label pools each round with
    :meth:`set_pools` while the pixel-label pool stays. Item ``i`` is the pool's patch description with its
    array rows attached (see :class:`~mixsup_monai.rounds.PseudoLabelPool`), passed through ``transform``.

    Use it with :class:`PoolBatchSampler` (fixed composition per batch) and a DataLoader without persistent
    workers, so that each epoch's workers see the current pools.

    ``data`` takes MONAI's ``Dataset(data=...)`` place: records of labelled tiles (what MONAI Label's
    ``BundleTrainTask`` sets as ``train#dataset#data``) turned into items by ``data_items`` and added to the pool
    ``data_pool`` (the pixel-labelled pool), after the datalist's items.

    Args:
        pools: ``{name: items or PseudoLabelPool}`` in ratio order (items may be empty lists).
        transform: callable applied to each item (e.g. a MONAI ``Compose`` of dictionary transforms).
        data: labelled-tile records ``{"image", "label"}``; ``None`` or ``[]`` for none.
        data_pool: the pool ``data``'s items join (default: the first pool).
        data_items: turns ``data`` into items of that pool (e.g. a partial of
            :func:`~mixsup_monai.data.annotation_patch_items`); required when ``data`` is not empty.
    """

    def __init__(
        self,
        pools: Mapping[str, PseudoLabelPool | Sequence[Mapping]],
        transform: Callable | None = None,
        data: Sequence[Mapping] | None = None,
        data_pool: str | None = None,
        data_items: Callable[[Sequence[Mapping]], list[dict]] | None = None,
    ):
        if not pools:
            raise ValueError(
                "PoolDataset needs at least one pool, e.g. {'pixel': [...], 'positive': [], 'negative': []}"
            )
        self.names = list(pools)
        if data_pool is not None and data_pool not in pools:  # a typo shows here, not once data arrives
            raise KeyError(f"PoolDataset: data_pool {data_pool!r} is not a declared pool {self.names}")
        if data:
            pools = _with_data(pools, list(data), self.names[0] if data_pool is None else data_pool, data_items)
        self.pools = {name: _as_pool(name, value) for name, value in pools.items()}
        self.transform = transform
        self._offsets = self._compute_offsets()

    def _compute_offsets(self) -> list[int]:
        offsets, total = [], 0
        for name in self.names:
            offsets.append(total)
            total += len(self.pools[name])
        offsets.append(total)
        return offsets

    @property
    def pool_sizes(self) -> list[int]:
        """Sizes of the pools, in declaration order."""
        return [len(self.pools[n]) for n in self.names]

    def set_pools(self, pools: PseudoLabelSet | Mapping[str, PseudoLabelPool | Sequence[Mapping]]) -> None:
        """Replace the pools named in ``pools`` (others keep their content).

        Raises:
            KeyError: a pool name that was not declared (the message lists the declared ones).
        """
        mapping = pools.pools if isinstance(pools, PseudoLabelSet) else pools
        unknown = [n for n in mapping if n not in self.pools]
        if unknown:
            raise KeyError(f"PoolDataset: unknown pool(s) {unknown}; declared pools are {self.names}")
        for name, value in mapping.items():
            self.pools[name] = _as_pool(name, value)
        self._offsets = self._compute_offsets()

    def __len__(self) -> int:
        return self._offsets[-1]

    def locate(self, index: int) -> tuple[str, int]:
        """``(pool name, index in the pool)`` of dataset index ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"PoolDataset index {index} out of range for {len(self)} items {self.pool_sizes}")
        p = bisect.bisect_right(self._offsets, index) - 1
        while self._offsets[p + 1] <= index:  # skip empty pools sharing the offset
            p += 1
        return self.names[p], index - self._offsets[p]

    def __getitem__(self, index: int):
        name, local = self.locate(int(index))
        item = self.pools[name].item(local)
        item.setdefault("pool", name)
        return apply_transform(self.transform, item) if self.transform is not None else item


class PoolBatchSampler:
    """A :class:`~mixsup_monai.data.RatioBatchSampler` over the current pools of a :class:`PoolDataset`.

    The inner sampler is rebuilt whenever the pool sizes change (each round), so a config can declare
    one DataLoader for the whole run. Draws depend on ``(seed, pool, epoch)`` only; the round runner
    continues the trainer's epoch count across rounds, so every round draws afresh and a resumed run
    draws the same batches. ``num_batches`` fixes the epoch length (an M-step costs the same whatever the
    number of pseudo labels; the default of ``RatioBatchSampler`` would grow with the largest pool).

    Args:
        dataset: the :class:`PoolDataset`.
        ratio: items per pool per ``sum(ratio)`` items, in the dataset's pool order (MixSup: ``(2, 1, 7)``).
        batch_size: items per batch (per process under DDP).
        num_batches: batches per epoch.
        seed: base seed of the draws.
        empty_pool: ``"redistribute"`` (default: an empty pool's share goes to the others, e.g. round 0 with
            pixel labels only) or ``"error"``.
        num_replicas, rank: DDP layout (default: from ``torch.distributed``).
    """

    def __init__(
        self,
        dataset: PoolDataset,
        ratio: Sequence[float] = (2, 1, 7),
        batch_size: int = 10,
        num_batches: int = 20,
        seed: int = 0,
        empty_pool: EmptyPoolMode | str = EmptyPoolMode.REDISTRIBUTE,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if not isinstance(dataset, PoolDataset):
            raise TypeError(f"PoolBatchSampler needs a PoolDataset, got {type(dataset).__name__}")
        if len(ratio) != len(dataset.names):
            raise ValueError(f"ratio {list(ratio)} has {len(ratio)} entries for the pools {dataset.names}")
        self.dataset = dataset
        self.ratio = [float(r) for r in ratio]
        self.batch_size = batch_size
        self.num_batches = int(num_batches)
        if self.num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches!r}")
        self.seed = seed
        self.empty_pool = empty_pool
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._inner: RatioBatchSampler | None = None
        self._sizes: list[int] | None = None

    @property
    def sampler(self) -> RatioBatchSampler:
        """The ratio sampler over the current pool sizes."""
        sizes = self.dataset.pool_sizes
        if self._inner is None or sizes != self._sizes:
            pools, offset = [], 0
            for s in sizes:
                pools.append(list(range(offset, offset + s)))
                offset += s
            self._inner = RatioBatchSampler(
                pools,
                ratio=self.ratio,
                batch_size=self.batch_size,
                num_batches=self.num_batches,
                seed=self.seed,
                num_replicas=self.num_replicas,
                rank=self.rank,
                empty_pool=self.empty_pool,
                pool_names=self.dataset.names,
            )
            self._sizes = list(sizes)
        self._inner.set_epoch(self.epoch)
        return self._inner

    @property
    def counts(self) -> list[int]:
        """Items per pool in each batch, for the current pools."""
        return list(self.sampler.counts)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.sampler)

    def __len__(self) -> int:
        if sum(self.dataset.pool_sizes) == 0:
            # nothing to train on yet (e.g. top-k MIL before its first E-step): the planned epoch length
            return self.num_batches
        return len(self.sampler)
