"""Pseudo-label store: one folder per round on disk, written atomically, read back memory-mapped."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixsup_monai.utils.distributed import is_rank0
from mixsup_monai.utils.io import write_json_atomic

__all__ = [
    "PseudoLabelPool",
    "PseudoLabelSet",
    "PseudoLabelStore",
]

logger = logging.getLogger(__name__)

STORE_VERSION = 1
_ITEMS_FILE = "items.json"
_ROUND_PREFIX = "round_"


def _name_file(error: OSError, tmp: Path, final: Path, current: Path) -> None:
    """Make ``error`` name the round's file (under ``final``) instead of none (``current``) or a temporary one."""
    if error.filename is None:
        error.filename = str(current)
        return
    with contextlib.suppress(TypeError, ValueError):  # a file outside tmp keeps its name
        error.filename = str(final / Path(os.fspath(error.filename)).relative_to(tmp))


@dataclass
class PseudoLabelPool:
    """One training pool of a round: patch descriptions plus per-patch arrays.

    ``items`` hold what is JSON-serialisable (slide path, level-0 ``location`` / ``size``, slide label,
    ...); ``arrays`` hold what is not (e.g. ``"label"``: ``(N, 1, H, W)`` float16 soft labels, or
    ``"negative"``: ``(N, C)`` bool), first dimension = ``len(items)``. :meth:`item` merges both for a
    dataset. Arrays loaded from a :class:`PseudoLabelStore` are memory-mapped (read lazily).

    Args:
        items: patch descriptions, one per patch.
        arrays: per-patch arrays, each with ``len(items)`` rows.
    """

    items: list[dict] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

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
        """One pool holding the items of ``pools`` in order (all must have the same array keys)."""
        pools = [p for p in pools if len(p)]
        if not pools:
            return cls()
        keys = set(pools[0].arrays)
        for p in pools[1:]:
            if set(p.arrays) != keys:
                raise ValueError(f"cannot concatenate pools with array keys {sorted(keys)} and {sorted(p.arrays)}")
        items = [it for p in pools for it in p.items]
        arrays = {k: np.concatenate([np.asarray(p.arrays[k]) for p in pools]) for k in sorted(keys)}
        return cls(items, arrays)


@dataclass
class PseudoLabelSet:
    """The pseudo labels one E-step made: named pools, statistics and provenance.

    Attributes:
        round_index: the round that trains on these labels (made by the model of ``round_index - 1``).
        pools: pool name -> :class:`PseudoLabelPool` (MixSup: ``"positive"`` = y_p+, ``"negative"`` = y_p-).
        stats: flat ``{name: number}`` statistics (logged to MLflow with ``step = round_index``).
        meta: anything JSON-serialisable that documents how the labels were made (rule parameters, ...).
    """

    round_index: int
    pools: dict[str, PseudoLabelPool] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {name: len(pool) for name, pool in self.pools.items()}


class PseudoLabelStore:
    """Pseudo labels per round under ``root/round_XX/``, each round written atomically.

    Layout of one round::

        root/round_02/items.json          # {"version", "round", "stats", "meta", "pools": {name: {"items", "arrays"}}}
        root/round_02/<pool>.<key>.npy    # one array per pool and key, memory-mapped on load

    :meth:`save` writes everything into a temporary sibling folder and renames it into place
    (``os.replace``), so a run killed while saving leaves either no ``round_02`` or a complete one --
    a resumed run can trust every round folder it finds. Only rank 0 writes.

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

    def save(self, label_set: PseudoLabelSet) -> Path:
        """Write ``label_set`` as round ``label_set.round_index`` (replacing an older copy) and return its folder."""
        final = self.path(label_set.round_index)
        if not is_rank0():
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=self.root))
        current = final  # the file being written, named by an OSError that names none
        try:
            pools_meta: dict[str, dict] = {}
            for name, pool in label_set.pools.items():
                if "/" in name or name.startswith("."):
                    raise ValueError(f"pool name {name!r} must not contain '/' or start with '.'")
                files = {}
                for key, array in pool.arrays.items():
                    filename = f"{name}.{key}.npy"
                    current = final / filename
                    np.save(tmp / filename, np.ascontiguousarray(np.asarray(array)))
                    files[key] = filename
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
                f"{str(file)!r} was written by pseudo-label store version {record.get('version')!r}, "
                f"this is version {STORE_VERSION}; delete the folder to recompute it"
            )
        pools = {}
        for name, meta in record["pools"].items():
            arrays = {
                key: np.load(folder / filename, mmap_mode="r" if mmap else None)
                for key, filename in meta["arrays"].items()
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
