"""Atomic file writing: a reader, or a run killed half-way, sees the old file or the new one, never a part."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

__all__ = ["torch_save_atomic", "write_json_atomic"]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if torch.is_tensor(value):
        return value.detach().cpu().tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path``, flush it to disk, then ``os.replace`` it.

    On failure the temporary file is removed and ``path`` is untouched; an ``OSError`` (e.g. ``ENOSPC``, the disk
    is full) is re-raised naming ``path`` as its ``filename``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None and e.filename in (None, tmp):
            # a failed write (ENOSPC: disk full) names no file, or the temporary one: name the file being written
            # (only an error with errno/strerror prints its file name; OSError("text") keeps its message)
            e.filename = str(path)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON to ``path`` through a temporary file in the same folder and ``os.replace``.

    A reader (or a run killed half-way) sees either the old file or the new one, never a partial file.
    """
    text = json.dumps(data, indent=indent, default=_json_default)
    return _write_atomic(path, lambda f: f.write(text.encode()))


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, then ``os.replace`` (no partial checkpoints).

    Identical objects give byte-identical files: torch names the archive's records after a path's file name,
    so the object is saved through the file object, never to the temporary name.
    """
    return _write_atomic(path, lambda f: torch.save(obj, f))


def load_network_weights(network: torch.nn.Module, path: str | os.PathLike, key: str = "model") -> torch.nn.Module:
    """Load a bundle's trained weights into ``network``: a plain ``state_dict`` (``models/model.pt``) or a
    checkpoint holding it under ``key`` (a round checkpoint), as MONAI's ``CheckpointLoader`` does with one key.

    Raises:
        InputError: the file is missing, or holds neither.
    """
    from mixsup_monai.utils.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError("trained weights not found", path, "train the bundle first or pass --ckpt_path")
    parameter = next(iter(network.parameters()), None)
    device = parameter.device if parameter is not None else "cpu"
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:  # a round checkpoint also holds the run's state (RNG, stage-2 objects)
        state = torch.load(path, map_location=device, weights_only=False)
    if isinstance(state, dict) and key in state and isinstance(state[key], dict):
        state = state[key]
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise InputError(
            "weights do not fit the network", path, str(error).splitlines()[0] + " (was it trained with this config?)"
        ) from error
    return network
