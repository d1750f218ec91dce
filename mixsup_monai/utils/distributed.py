"""Distributed helpers: which rank writes files, and waiting for every rank."""

from __future__ import annotations

import torch

__all__ = ["barrier", "is_rank0", "rank"]


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
