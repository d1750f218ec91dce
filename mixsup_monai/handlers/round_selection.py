"""Ignite handler choosing the best round of a RoundRunner, writing the per-round table and the final model."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.utils import StrEnum, look_up_option, min_version, optional_import

from mixsup_monai.utils.distributed import is_rank0
from mixsup_monai.utils.io import torch_save_atomic, write_json_atomic

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = [
    "SelectionMode",
    "RoundSelection",
    "RoundEarlyStopping",
    "flatten_record",
    "is_improvement",
    "read_selection",
    "select_round",
    "write_rounds_table",
]

logger = logging.getLogger(__name__)

#: columns shown first in the table (when present), then every other metric in name order.
DEFAULT_COLUMNS = (
    "round",
    "pool/pixel",
    "pool/positive",
    "pool/negative",
    "pseudo/kept",
    "pseudo/dropped",
    "pseudo/hard_negatives",
    "pseudo/positive_pixel_fraction",
    "mstep/train_loss",
    "stage2_loss",
    "stage2_epoch_loss",
    "train_auc",
    "val_loss",
    "val_auc",
    "val_spec_at_100_sens",
    "time_s",
)


class SelectionMode(StrEnum):
    """Whether the best round has the lowest (``min``, losses) or highest (``max``, AUC) metric."""

    MIN = "min"
    MAX = "max"


def is_improvement(
    value: float | None, best: float | None, mode: SelectionMode | str = SelectionMode.MIN, min_delta: float = 0.0
) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` in the direction of ``mode``.

    The one comparison of round selection, round early stopping and epoch early stopping (NPL's M-step).

    Args:
        value: the new metric value; ``None`` or not finite (NaN, inf) never improves.
        best: the best value so far; ``None`` (nothing yet): any finite ``value`` improves.
        mode: ``"min"`` (lower is better) or ``"max"``.
        min_delta: smallest change that counts (ties never improve).
    """
    mode = look_up_option(mode, SelectionMode)
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == SelectionMode.MIN else value > best + min_delta


def flatten_record(record: Mapping[str, Any]) -> dict[str, float]:
    """One round record of :class:`~mixsup_monai.rounds.RoundRunner` as flat ``{column: number}``.

    ``metrics`` keep their names (``stage2_loss``, ``val_auc``, ...); M-step metrics get ``mstep/``, pool
    sizes ``pool/``; pseudo-label statistics already carry ``pseudo/``.
    """
    out: dict[str, float] = {"round": float(record["round"])}
    for key, value in (record.get("pool_sizes") or {}).items():
        out[f"pool/{key}"] = float(value)
    for key, value in (record.get("pseudo_labels") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key if "/" in key else f"pseudo/{key}"] = float(value)
    for key, value in (record.get("mstep") or {}).items():
        out[f"mstep/{key}"] = float(value)
    for key, value in (record.get("metrics") or {}).items():
        out[key] = float(value)
    if "time_s" in record:
        out["time_s"] = float(record["time_s"])
    return out


def select_round(records: Sequence[Mapping], metric: str = "stage2_loss", mode: SelectionMode | str = "min") -> int:
    """Index of the best round by ``metric`` (ties: the earlier round; NaN never wins).

    Raises:
        ValueError: no round has a finite value of ``metric`` (the message lists the metrics there are).
    """
    mode = look_up_option(mode, SelectionMode)
    best, best_value = None, None
    for rec in records:
        value = flatten_record(rec).get(metric)
        if is_improvement(value, best_value, mode):
            best, best_value = int(rec["round"]), value
    if best is None:
        available = sorted({k for rec in records for k in flatten_record(rec)})
        raise ValueError(
            f"round selection: no round has a finite {metric!r}; available metrics: {available} (validation "
            "metrics need validation slides in the datalist)"
        )
    return best


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if float(value).is_integer() and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4f}"


def write_rounds_table(
    records: Sequence[Mapping], output_dir: str | Path, selected: int | None = None, name: str = "rounds"
) -> list[Path]:
    """Write the per-round table as ``<name>.csv`` (every column) and ``<name>.md`` (the main ones).

    The selected round is marked in both.

    Returns:
        The two paths.
    """
    rows = [flatten_record(r) for r in records]
    keys = {k for row in rows for k in row}
    columns = [c for c in DEFAULT_COLUMNS if c in keys] + sorted(keys - set(DEFAULT_COLUMNS))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = output_dir / f"{name}.csv", output_dir / f"{name}.md"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*columns, "selected"])
        for row in rows:
            writer.writerow([row.get(c, "") for c in columns] + [int(row["round"] == selected)])
    shown = [c for c in DEFAULT_COLUMNS if c in keys]  # the markdown table keeps the columns a reader needs
    lines = [
        "| " + " | ".join([*shown, "selected"]) + " |",
        "|" + "---|" * (len(shown) + 1),
    ]
    for row in rows:
        mark = "**yes**" if selected is not None and int(row["round"]) == selected else ""
        lines.append("| " + " | ".join([_fmt(row.get(c)) for c in shown] + [mark]) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    return [csv_path, md_path]


class RoundSelection:
    """Choose the best round of a :class:`~mixsup_monai.rounds.RoundRunner` and export it.

    After every round (``EPOCH_COMPLETED``) the best round so far is in ``engine.state.best_round``; when
    the run completes (``COMPLETED``) the handler writes the per-round table (``rounds.csv`` / ``rounds.md``
    in ``output_dir``) and exports the best round's checkpoint entries, one file each, into ``ckpt_dir``:
    ``files`` maps a checkpoint entry to its file name (default ``{"model": "model.pt"}``). Each file holds
    the entry itself — for the network a plain ``state_dict``, which is what the Model Zoo's
    ``ckpt_export``, MONAI Label and MONAI's ``CheckpointLoader`` load without a key. The choice is recorded
    last in ``ckpt_dir/selection.json`` (round, metric, value, files). Rank 0 writes.

    Default = the paper: lowest stage-2 TRAINING loss. ``metric="val_loss"`` (or ``"val_auc"`` with
    ``mode="max"``) selects on the validation slides instead.

    Args:
        metric: column of the round table to select on (see :func:`flatten_record`).
        mode: ``"min"`` or ``"max"``.
        output_dir: folder of the round table.
        ckpt_dir: folder of the exported files (default: the runner's ``ckpt_dir``).
        files: checkpoint entry -> exported file name (e.g. ``{"model": "model.pt", "classifier":
            "classifier.pt"}``).
        table_name: stem of the table files.
    """

    #: name of the record of the choice, beside the exported files.
    SELECTION_FILE = "selection.json"

    def __init__(
        self,
        metric: str = "stage2_loss",
        mode: SelectionMode | str = SelectionMode.MIN,
        output_dir: str | None = None,
        ckpt_dir: str | None = None,
        files: Mapping[str, str] | None = None,
        table_name: str = "rounds",
    ) -> None:
        self.metric = metric
        self.mode = look_up_option(mode, SelectionMode)
        self.output_dir = output_dir
        self.ckpt_dir = ckpt_dir
        self.files = dict(files) if files else {"model": "model.pt"}
        names = list(self.files.values())
        if len(set(names)) != len(names) or self.SELECTION_FILE in names:
            raise ValueError(f"files must name distinct files other than {self.SELECTION_FILE!r}, got {self.files}")
        self.table_name = table_name
        self.best_round: int | None = None
        self.table_files: list[Path] = []
        self.exported: dict[str, Path] = {}

    @property
    def final_path(self) -> Path | None:
        """The exported network (``files["model"]``), once the run has completed."""
        return self.exported.get("model")

    def attach(self, engine: Any) -> None:
        if not engine.has_event_handler(self.round_completed, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.round_completed)
        if not engine.has_event_handler(self.completed, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def round_completed(self, engine: Any) -> None:
        try:
            self.best_round = select_round(engine.records, self.metric, self.mode)
        except ValueError:
            self.best_round = None
        engine.state.best_round = self.best_round
        logger.info(
            "after round %d the best round by %s (%s) is %s",
            engine.state.round,
            self.metric,
            self.mode,
            self.best_round,
        )

    def completed(self, engine: Any) -> None:
        records = engine.records
        self.best_round = select_round(records, self.metric, self.mode)
        engine.state.best_round = self.best_round
        record = records[self.best_round]
        if not is_rank0():
            return
        output_dir = Path(self.output_dir) if self.output_dir else Path(engine.ckpt_dir)
        self.table_files = write_rounds_table(records, output_dir, self.best_round, self.table_name)
        checkpoint = torch.load(record["checkpoint"], map_location="cpu", weights_only=False)
        missing = [k for k in self.files if k not in checkpoint]
        if missing:
            raise KeyError(f"round checkpoint {record['checkpoint']!r} lacks {missing}; it has {sorted(checkpoint)}")
        ckpt_dir = Path(self.ckpt_dir) if self.ckpt_dir else Path(engine.ckpt_dir)
        self.exported = {k: torch_save_atomic(checkpoint[k], ckpt_dir / name) for k, name in self.files.items()}
        selection = {
            "round": self.best_round,
            "selection_metric": self.metric,
            "selection_mode": str(self.mode),
            "selection_value": flatten_record(record)[self.metric],
            "files": dict(self.files),
        }
        write_json_atomic(ckpt_dir / self.SELECTION_FILE, selection)
        logger.info(
            "selected round %d (%s = %.4f); exported %s to %s; table %s",
            self.best_round,
            self.metric,
            selection["selection_value"],
            ", ".join(self.files.values()),
            ckpt_dir,
            self.table_files[1],
        )


def read_selection(ckpt_dir: str | Path) -> dict:
    """The record :class:`RoundSelection` wrote beside the exported files (round, metric, value, files)."""
    path = Path(ckpt_dir) / RoundSelection.SELECTION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no round was exported there (the run did not complete)")
    return json.loads(path.read_text())


class RoundEarlyStopping:
    """Stop a :class:`~mixsup_monai.rounds.RoundRunner` when ``metric`` has not improved for ``patience`` rounds.

    NPL's rule ("repeat until the validation loss stops improving"); MixSup runs a fixed number of rounds.
    Checked after every round and when a run starts (a resumed run that already met the condition stops
    at once instead of adding rounds). Rounds without a finite value of ``metric`` do not count as
    improvements.

    Args:
        metric: round-table column (e.g. ``"val_loss"``).
        mode: ``"min"`` or ``"max"``.
        patience: rounds without improvement before stopping.
        min_delta: smallest change that counts as an improvement.
    """

    def __init__(
        self,
        metric: str = "val_loss",
        mode: SelectionMode | str = SelectionMode.MIN,
        patience: int = 1,
        min_delta: float = 0.0,
    ) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an int >= 1, got {patience!r}")
        self.metric = metric
        self.mode = look_up_option(mode, SelectionMode)
        self.patience = patience
        self.min_delta = float(min_delta)
        self.stopped_after: int | None = None

    def attach(self, engine: Any) -> None:
        if not engine.has_event_handler(self.check, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.check)
        if not engine.has_event_handler(self.check, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.check)

    def rounds_without_improvement(self, records: Sequence[Mapping]) -> int:
        best, since = None, 0
        for rec in records:
            value = flatten_record(rec).get(self.metric)
            if is_improvement(value, best, self.mode, self.min_delta):
                best, since = value, 0
            else:
                since += 1
        return since

    def check(self, engine: Any) -> None:
        records = engine.records
        if records and self.rounds_without_improvement(records) >= self.patience:
            self.stopped_after = int(records[-1]["round"])
            logger.info(
                "no improvement of %s for %d round(s): stopping after round %d",
                self.metric,
                self.patience,
                self.stopped_after,
            )
            engine.terminate()
