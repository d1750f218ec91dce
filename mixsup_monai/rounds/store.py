"""Pseudo-label store: one folder per round on disk, written atomically, read back memory-mapped.

An E-step's labels never need the cohort in memory: a round opened with :meth:`PseudoLabelStore.open_round`
writes each slide's arrays to disk as a shard the moment the rule adds them (:meth:`PseudoLabelSet.add`), and
the M-step reads every shard memory-mapped through one :class:`ShardedArray` per pool and key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixsup_monai.utils.distributed import is_rank0
from mixsup_monai.utils.distributed import rank as _rank
from mixsup_monai.utils.io import write_json_atomic

__all__ = [
    "ShardedArray",
    "PseudoLabelPool",
    "PseudoLabelSet",
    "PseudoLabelStore",
]

logger = logging.getLogger(__name__)

#: 2: every pool array is a list of shards (one per slide and call of ``add``); 1 had one ``.npy`` per pool array.
STORE_VERSION = 2
_ITEMS_FILE = "items.json"
_ROUND_PREFIX = "round_"


def _name_file(error: OSError, tmp: Path, final: Path, current: Path) -> None:
    """Make ``error`` name the round's file (under ``final``) instead of none (``current``) or a temporary one."""
    if error.filename is None:
        error.filename = str(current)
        return
    with contextlib.suppress(TypeError, ValueError):  # a file outside tmp keeps its name
        error.filename = str(final / Path(os.fspath(error.filename)).relative_to(tmp))


class ShardedArray:
    """Rows of several arrays (shards, e.g. one per slide, memory-mapped) seen as one read-only array, never joined.

    ``len``, ``shape``, ``dtype`` and ``a[i]`` (one row, read from its shard) work without copying;
    ``np.asarray(a)`` joins the shards (for small arrays, e.g. NPL's ``(M, C)`` negative labels).

    Args:
        shards: arrays with equal trailing shape and dtype, ``(n_i, *row_shape)`` each.
    """

    def __init__(self, shards: Sequence[np.ndarray]) -> None:
        self.shards = [s for s in shards if len(s)] or list(shards[:1])
        if not self.shards:
            raise ValueError("ShardedArray needs at least one shard")
        first = self.shards[0]
        for shard in self.shards[1:]:
            if shard.shape[1:] != first.shape[1:] or shard.dtype != first.dtype:
                raise ValueError(
                    f"shards must share row shape and dtype: {first.shape[1:]} {first.dtype} vs "
                    f"{shard.shape[1:]} {shard.dtype}"
                )
        self.ends = np.cumsum([len(s) for s in self.shards]).tolist()

    def __len__(self) -> int:
        return int(self.ends[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.shards[0].shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.shards[0].dtype

    @property
    def ndim(self) -> int:
        return self.shards[0].ndim

    def __getitem__(self, index: int) -> np.ndarray:
        if isinstance(index, slice) or not isinstance(index, (int, np.integer)):
            return np.asarray(self)[index]
        i = int(index) + len(self) if index < 0 else int(index)
        if not 0 <= i < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        shard = bisect_right(self.ends, i)
        start = self.ends[shard - 1] if shard else 0
        return self.shards[shard][i - start]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        joined = np.concatenate([np.asarray(s) for s in self.shards])
        return joined if dtype is None else joined.astype(dtype)

    def __repr__(self) -> str:
        return f"ShardedArray(shape={self.shape}, dtype={self.dtype}, shards={len(self.shards)})"


def _shards(array: np.ndarray | ShardedArray) -> list[np.ndarray]:
    return list(array.shards) if isinstance(array, ShardedArray) else [array]


def _joined(shards: list[np.ndarray]) -> np.ndarray | ShardedArray:
    return shards[0] if len(shards) == 1 else ShardedArray(shards)


@dataclass
class PseudoLabelPool:
    """One training pool of a round: patch descriptions plus per-patch arrays.

    ``items`` hold what is JSON-serialisable (slide path, level-0 ``location`` / ``size``, slide label,
    ...); ``arrays`` hold what is not (e.g. ``"label"``: ``(N, 1, H, W)`` float16 soft labels, or
    ``"negative"``: ``(N, C)`` bool), first dimension = ``len(items)``. :meth:`item` merges both for a
    dataset. Arrays loaded from a :class:`PseudoLabelStore` are memory-mapped (read lazily); a pool built
    slide by slide holds a :class:`ShardedArray` per key.

    Args:
        items: patch descriptions, one per patch.
        arrays: per-patch arrays, each with ``len(items)`` rows.
    """

    items: list[dict] = field(default_factory=list)
    arrays: dict[str, np.ndarray | ShardedArray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, array in self.arrays.items():
            if len(array) != len(self.items):
                raise ValueError(
                    f"PseudoLabelPool: array {key!r} has {len(array)} rows but the pool has {len(self.items)} items."
                )

    def __len__(self) -> int:
        return len(self.items)

    def item(self, index: int) -> dict:
        """Item ``index`` with its array rows attached (``np.ndarray`` copies, safe to modify)."""
        out = dict(self.items[index])
        for key, array in self.arrays.items():
            out[key] = np.array(array[index])
        return out

    @classmethod
    def concatenate(cls, pools: list[PseudoLabelPool]) -> PseudoLabelPool:
        """One pool holding the items of ``pools`` in order (all must have the same array keys; no array is joined)."""
        out = cls()
        for pool in pools:
            out.extend(pool.items, pool.arrays)
        return out

    def extend(self, items: Sequence[dict], arrays: Mapping[str, np.ndarray | ShardedArray] | None = None) -> None:
        """Append ``items`` and their array rows (kept as further shards, not copied into one array).

        Raises:
            ValueError: the array keys differ from the pool's, or an array's rows differ from ``len(items)``.
        """
        arrays = dict(arrays or {})
        if not items:
            return
        if self.items and set(arrays) != set(self.arrays):
            raise ValueError(f"cannot add arrays {sorted(arrays)} to a pool with arrays {sorted(self.arrays)}")
        for key, array in arrays.items():
            if len(array) != len(items):
                raise ValueError(f"array {key!r} has {len(array)} rows for {len(items)} items")
        self.items.extend(items)
        for key, array in arrays.items():
            previous = _shards(self.arrays[key]) if key in self.arrays else []
            self.arrays[key] = _joined(previous + _shards(array))


def _check_pool_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"pool name {name!r} must be a non-empty str without '/' that does not start with '.'")


@dataclass
class PseudoLabelSet:
    """The pseudo labels one E-step made: named pools, statistics and provenance.

    A rule fills it slide by slide with :meth:`add`. A set opened by :meth:`PseudoLabelStore.open_round` writes
    every array added to its round's temporary folder at once and keeps only a memory map of it (``shard_dir``):
    the E-step's memory then holds one slide's labels, not the cohort's.

    Attributes:
        round_index: the round that trains on these labels (made by the model of ``round_index - 1``).
        pools: pool name -> :class:`PseudoLabelPool` (MixSup: ``"positive"`` = y_p+, ``"negative"`` = y_p-).
        stats: flat ``{name: number}`` statistics (logged to MLflow with ``step = round_index``).
        meta: anything JSON-serialisable that documents how the labels were made (rule parameters, ...).
        shard_dir: where :meth:`add` writes arrays (``None``: they stay in memory).
    """

    round_index: int
    pools: dict[str, PseudoLabelPool] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    shard_dir: Path | None = field(default=None, repr=False, compare=False)
    _spilled: dict[tuple[str, str], int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def sizes(self) -> dict[str, int]:
        return {name: len(pool) for name, pool in self.pools.items()}

    def add(self, pool: str, items: Sequence[dict], arrays: Mapping[str, np.ndarray] | None = None) -> None:
        """Append ``items`` (and one row per item of each array) to pool ``pool``, creating the pool if needed.

        Args:
            pool: pool name (a file-name part: no ``/``, no leading ``.``).
            items: JSON-serialisable patch descriptions.
            arrays: ``{key: (len(items), ...) array}``; with ``shard_dir`` each is written there as one shard now.
        """
        _check_pool_name(pool)
        target = self.pools.setdefault(pool, PseudoLabelPool())
        arrays = dict(arrays or {})
        if self.shard_dir is not None and items:
            arrays = {key: self._spill(pool, key, np.asarray(array)) for key, array in arrays.items()}
        target.extend(list(items), arrays)

    def _spill(self, pool: str, key: str, array: np.ndarray) -> np.ndarray:
        # numbered by a count of this set's writes, not of the pool's shards (empty shards are dropped from those)
        index = self._spilled.get((pool, key), 0)
        self._spilled[(pool, key)] = index + 1
        file = Path(self.shard_dir) / f"{pool}.{key}.{index:05d}.npy"
        try:
            np.save(file, np.ascontiguousarray(array))
        except OSError as e:  # ENOSPC...: name the file as it would be in the round's folder, not the temporary one
            if e.errno is not None:
                e.filename = str(file.parent.parent / f"{_ROUND_PREFIX}{int(self.round_index):02d}" / file.name)
            raise
        return np.load(file, mmap_mode="r")


class PseudoLabelStore:
    """Pseudo labels per round under ``root/round_XX/``, each round written atomically.

    Layout of one round::

        root/round_02/items.json                # {"version", "round", "stats", "meta",
                                                #  "pools": {name: {"items": [...], "arrays": {key: [shard, ...]}}}}
        root/round_02/<pool>.<key>.<00000>.npy  # one shard per slide (per ``add``), memory-mapped on load

    A round is written into a temporary sibling folder -- by :meth:`save`, or shard by shard during the
    E-step into the folder of :meth:`open_round` -- and renamed into place (``os.replace``) when complete, so a
    run killed during the E-step or while saving leaves either no ``round_02`` or a complete one: a resumed
    run can trust every round folder it finds, and never reads a half-written shard. Only rank 0 keeps a round;
    the other ranks' shards are deleted when they save.

    Args:
        root: folder of the store (created on first save).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, round_index: int) -> Path:
        """The folder of round ``round_index``."""
        if isinstance(round_index, bool) or not isinstance(round_index, (int, np.integer)) or round_index < 0:
            raise ValueError(f"round_index must be a non-negative int, got {round_index!r}.")
        return self.root / f"{_ROUND_PREFIX}{int(round_index):02d}"

    def exists(self, round_index: int) -> bool:
        return (self.path(round_index) / _ITEMS_FILE).is_file()

    def rounds(self) -> list[int]:
        """Indices of the complete rounds in the store, sorted."""
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            if p.is_dir() and p.name.startswith(_ROUND_PREFIX) and (p / _ITEMS_FILE).is_file():
                try:
                    out.append(int(p.name[len(_ROUND_PREFIX) :]))
                except ValueError:
                    continue
        return sorted(out)

    def __iter__(self) -> Iterator[int]:
        return iter(self.rounds())

    @contextlib.contextmanager
    def open_round(self, round_index: int) -> Iterator[PseudoLabelSet]:
        """An empty :class:`PseudoLabelSet` of ``round_index`` whose arrays go to disk as they are added.

        Give it to the rule, then :meth:`save` it inside the block. On leaving the block the temporary folder is
        removed if the round was not saved (the rule failed): nothing half-made is ever listed or read back.
        Folders a killed run of this rank left behind are removed first.
        """
        final = self.path(round_index)
        prefix = f".{final.name}.rank{_rank()}."
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(f"{prefix}*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=self.root))
        try:
            yield PseudoLabelSet(round_index=round_index, shard_dir=tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def save(self, label_set: PseudoLabelSet) -> Path:
        """Write ``label_set`` as round ``label_set.round_index`` (replacing an older copy) and return its folder.

        Shards already in the set's ``shard_dir`` (a set of :meth:`open_round`) are kept where they are; every
        other array is written now, one file per shard.
        """
        final = self.path(label_set.round_index)
        if not is_rank0():
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        own = label_set.shard_dir is not None and Path(label_set.shard_dir).parent == self.root
        tmp = (
            Path(label_set.shard_dir)
            if own
            else Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=self.root))
        )
        current = final  # the file being written, named by an OSError that names none
        try:
            pools_meta: dict[str, dict] = {}
            for name, pool in label_set.pools.items():
                _check_pool_name(name)
                files: dict[str, list[str]] = {}
                for key, array in pool.arrays.items():
                    files[key] = []
                    for index, shard in enumerate(_shards(array)):
                        if isinstance(shard, np.memmap) and shard.filename and Path(shard.filename).parent == tmp:
                            files[key].append(Path(shard.filename).name)
                            continue
                        filename = f"{name}.{key}.m{index:05d}.npy"  # "m": apart from the names of spilled shards
                        current = final / filename
                        np.save(tmp / filename, np.ascontiguousarray(np.asarray(shard)))
                        files[key].append(filename)
                pools_meta[name] = {"items": pool.items, "arrays": files}
            record = {
                "version": STORE_VERSION,
                "round": int(label_set.round_index),
                "stats": label_set.stats,
                "meta": label_set.meta,
                "pools": pools_meta,
            }
            current = final / _ITEMS_FILE
            write_json_atomic(tmp / _ITEMS_FILE, record, indent=None)
            if final.exists():
                # replace an older copy: move it aside first (os.replace cannot replace a non-empty folder)
                old = final.with_name(f".{final.name}.old.{os.getpid()}")
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError) and e.errno is not None:  # ENOSPC...: name the round's file, not the tmp one
                _name_file(e, tmp, final, current)
            raise
        logger.info("pseudo labels of round %d saved to %s (%s)", label_set.round_index, final, label_set.sizes())
        return final

    def load(self, round_index: int, mmap: bool = True) -> PseudoLabelSet:
        """Read round ``round_index``; arrays are memory-mapped (``mmap=True``) or loaded into memory.

        Raises:
            FileNotFoundError: the round is not in the store (the message lists the rounds that are).
            ValueError: the folder was written by an incompatible version of the store.
        """
        folder = self.path(round_index)
        file = folder / _ITEMS_FILE
        if not file.is_file():
            raise FileNotFoundError(
                f"pseudo labels of round {round_index} not found in {str(self.root)!r} "
                f"(complete rounds there: {self.rounds()})"
            )
        with open(file) as f:
            record = json.load(f)
        if record.get("version") != STORE_VERSION:
            raise ValueError(
                f"{str(file)!r} was written by pseudo-label store version {record.get('version')!r}, this is version "
                f"{STORE_VERSION} (one shard per slide); start the run again without --resume, or delete the folder "
                "to recompute its labels"
            )
        pools = {}
        for name, meta in record["pools"].items():
            arrays = {
                key: _joined([np.load(folder / filename, mmap_mode="r" if mmap else None) for filename in filenames])
                for key, filenames in meta["arrays"].items()
            }
            pools[name] = PseudoLabelPool(items=meta["items"], arrays=arrays)
        return PseudoLabelSet(
            round_index=int(record["round"]), pools=pools, stats=record.get("stats", {}), meta=record.get("meta", {})
        )

    def delete_from(self, round_index: int) -> None:
        """Remove rounds ``>= round_index`` (e.g. when a run restarts without resuming)."""
        if not is_rank0():
            return
        for r in self.rounds():
            if r >= round_index:
                shutil.rmtree(self.path(r), ignore_errors=True)

    def __repr__(self) -> str:
        return f"PseudoLabelStore({str(self.root)!r}, rounds={self.rounds()})"
