"""Distributed helpers: which rank writes files, and waiting for every rank."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")

__all__ = ["barrier", "is_rank0", "rank", "split_map"]


def is_distributed() -> bool:
    """True inside an initialised ``torch.distributed`` process group."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_rank0() -> bool:
    """True outside distributed runs and on rank 0 (the only rank that writes files)."""
    return not is_distributed() or torch.distributed.get_rank() == 0


def rank() -> int:
    """This process's rank (0 outside distributed runs)."""
    return torch.distributed.get_rank() if is_distributed() else 0


def barrier() -> None:
    """Wait for every rank (rank 0 writes files that the other ranks then read); no-op outside DDP."""
    if is_distributed():
        torch.distributed.barrier()


def split_map(function: Callable[[T], Any], values: Sequence[T]) -> list[Any]:
    """``[function(v) for v in values]`` with the values split across the ranks, every rank getting every result.

    Rank ``r`` of ``w`` computes values ``r, r + w, ...``; the (picklable) results are gathered with
    ``all_gather_object``. Outside a process group this is the plain list comprehension.
    """
    if not is_distributed():
        return [function(v) for v in values]
    world, me = torch.distributed.get_world_size(), torch.distributed.get_rank()
    own = {i: function(values[i]) for i in range(me, len(values), world)}
    gathered: list[dict[int, Any]] = [{} for _ in range(world)]
    torch.distributed.all_gather_object(gathered, own)
    merged = {i: result for part in gathered for i, result in part.items()}
    return [merged[i] for i in range(len(values))]
