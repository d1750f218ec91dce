"""Resume state of a round runner: ``ckpt_dir/rounds.json`` (completed rounds) + ``ckpt_dir/rounds/round_XX.pt``."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mixsup_monai.utils.distributed import barrier, is_rank0
from mixsup_monai.utils.io import torch_save_atomic, write_json_atomic

__all__ = ["RoundCheckpoints", "STATE_FILE", "STATE_VERSION"]

logger = logging.getLogger(__name__)

#: name of the state file in ``ckpt_dir`` listing the completed rounds.
STATE_FILE = "rounds.json"
#: version of the state file's format: ``{"version", "seed", "max_rounds", "config", "rounds": [record, ...]}``.
STATE_VERSION = 1


def _unwrapped(obj: Any) -> Any:
    # a DDP network is checkpointed as its module, so that single- and multi-GPU runs read each other's rounds
    return obj.module if isinstance(obj, torch.nn.parallel.DistributedDataParallel) else obj


class RoundCheckpoints:
    """The completed rounds of one run in ``ckpt_dir``, so that a new process continues where the last one ended.

    ``ckpt_dir/rounds.json`` holds the run's identity (``seed``, ``config``), ``max_rounds`` and one record per
    completed round (``"round": 0, 1, 2, ...``, each with its ``"checkpoint"`` path); ``ckpt_dir/rounds/round_XX.pt``
    holds the state dict of every object of ``save_dict`` at the end of round ``XX``. Both are written atomically
    and by rank 0 only, the checkpoint first, so a run killed at any point leaves a state that lists only
    rounds whose checkpoint is complete.

    Args:
        ckpt_dir: folder of ``rounds.json`` and ``rounds/round_XX.pt``.
        save_dict: objects with ``state_dict`` / ``load_state_dict`` checkpointed per round, by name.
        seed: the run's seed; a resume with another seed is refused.
        max_rounds: rounds after round 0 of this run; a resume loads at most ``max_rounds + 1`` rounds (it may
            differ from the run that wrote the state: a finished run can be continued for more rounds).
        config: the run's settings (values compared as strings); a resume with different values of keys both
            runs have (except ``max_rounds``) is refused instead of mixing two runs.
    """

    def __init__(
        self,
        ckpt_dir: str | Path,
        save_dict: Mapping[str, Any],
        seed: int = 0,
        max_rounds: int = 0,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self.save_dict = dict(save_dict)
        self.seed = int(seed)
        self.max_rounds = int(max_rounds)
        self.config = {str(k): str(v) for k, v in (config or {}).items()}
        #: one dict per completed round (``"round"``, ``"checkpoint"``, metrics, ...), in round order.
        self.records: list[dict] = []

    @property
    def state_file(self) -> Path:
        """``ckpt_dir/rounds.json``."""
        return self.ckpt_dir / STATE_FILE

    def checkpoint_path(self, round_index: int) -> Path:
        """``ckpt_dir/rounds/round_XX.pt``, the checkpoint at the end of round ``round_index``."""
        return self.ckpt_dir / "rounds" / f"round_{round_index:02d}.pt"

    def exists(self) -> bool:
        """True if ``rounds.json`` is in ``ckpt_dir`` (an earlier run to resume)."""
        return self.state_file.is_file()

    def start(self) -> None:
        """Begin a new run: forget the completed rounds and write a state file listing none."""
        self.records = []
        self._write()
        barrier()

    def load(self) -> int:
        """Check ``rounds.json`` against this run, load its records and its last checkpoint into ``save_dict``.

        Returns:
            How many rounds are complete (rounds ``0 .. completed - 1``), at most ``max_rounds + 1``.

        Raises:
            ValueError: the state file has another version, seed or settings, or its rounds are not 0, 1, 2, ...
            FileNotFoundError: the checkpoint of the last completed round is missing.
            KeyError: that checkpoint lacks an object of ``save_dict``.
        """
        with open(self.state_file) as f:
            state = json.load(f)
        self._check(state)
        records = list(state.get("rounds", []))
        if [r.get("round") for r in records] != list(range(len(records))):
            raise ValueError(
                f"{str(self.state_file)!r}: rounds must be 0, 1, 2, ...; got {[r.get('round') for r in records]}"
            )
        completed = min(len(records), self.max_rounds + 1)
        self.records = records[:completed]
        if completed:
            self._load_checkpoint(completed - 1)
        return completed

    def save_round(self, round_index: int, record: dict) -> None:
        """Checkpoint ``save_dict`` as round ``round_index``, then list ``record`` (given its path) as complete.

        If either write fails (e.g. ``OSError`` ``ENOSPC``: the disk is full), the round is not complete: the
        state file and the files of the finished rounds are as before, the record is not kept and a checkpoint
        already written for this round is removed (it would be an unlisted, half-saved round, and it frees space).
        """
        path = self.checkpoint_path(round_index)
        if is_rank0():
            torch_save_atomic({k: _unwrapped(v).state_dict() for k, v in self.save_dict.items()}, path)
        record["checkpoint"] = str(path)
        self.records.append(record)
        try:
            self._write()
        except BaseException:
            self.records.pop()
            if is_rank0():
                path.unlink(missing_ok=True)
            raise
        barrier()

    def _write(self) -> None:
        if is_rank0():
            write_json_atomic(
                self.state_file,
                {
                    "version": STATE_VERSION,
                    "seed": self.seed,
                    "max_rounds": self.max_rounds,
                    "config": self.config,
                    "rounds": self.records,
                },
            )

    def _check(self, state: Mapping[str, Any]) -> None:
        """Refuse a state file written by another kind of run (version, seed, settings)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"{str(self.state_file)!r} has version {state.get('version')!r}, expected {STATE_VERSION}; "
                "use another ckpt_dir or resume=False"
            )
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(
                f"{str(self.state_file)!r} was written by a run with seed {state.get('seed')}, this run has seed "
                f"{self.seed}: a resumed run would not match either; use the same seed, another ckpt_dir or "
                "resume=False"
            )
        previous = state.get("config") or {}
        changed = sorted(
            k for k in set(previous) & set(self.config) if k != "max_rounds" and previous[k] != self.config[k]
        )
        if changed:
            diff = ", ".join(f"{k}: {previous[k]} -> {self.config[k]}" for k in changed)
            raise ValueError(
                f"{str(self.state_file)!r} was written with other settings ({diff}); resuming would mix two runs: "
                "use the same settings, another ckpt_dir or resume=False"
            )

    def _load_checkpoint(self, round_index: int) -> None:
        path = self.checkpoint_path(round_index)
        if not path.is_file():
            raise FileNotFoundError(
                f"{str(self.state_file)!r} lists round {round_index} as complete but its checkpoint "
                f"{str(path)!r} is missing; restore it or run with resume=False"
            )
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        missing = [k for k in self.save_dict if k not in checkpoint]
        if missing:
            raise KeyError(f"checkpoint {str(path)!r} lacks {missing} (it has {sorted(checkpoint)})")
        for key, obj in self.save_dict.items():
            _unwrapped(obj).load_state_dict(checkpoint[key])
        logger.info(
            "resuming after round %d (%s): %d round(s) loaded, not recomputed", round_index, path, round_index + 1
        )
