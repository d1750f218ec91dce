"""Estimation of LSR's label-count statistics table p(c_l | z): from masks or from visual estimates.

The table itself (its JSON format, validation and z lookup) is part of the datalist contract and lives in
:mod:`mixsup_monai.data.label_stats`; it is re-exported here so ``mixsup_monai.methods.lsr.LabelStatsTable``
keeps working.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from mixsup_monai.data.label_stats import LabelStatsTable, z_to_row_index

__all__ = [
    "LabelStatsTable",
    "estimate_label_stats",
    "estimate_label_stats_from_csv",
    "label_stats_from_fractions",
    "z_to_row_index",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- estimation
def label_stats_from_fractions(
    fractions: dict[int, list[np.ndarray]], classes: Sequence[str], source: str, ddof: int
) -> LabelStatsTable:
    """The table from per-block class fractions: per z, mean and std over blocks (std 0, warned, for < 2 blocks).

    Args:
        fractions: ``{z: [(L,) class fractions of one block, ...]}``.
        classes: the L class names.
        source: free text stored in the table.
        ddof: delta degrees of freedom of the std (1: sample std).
    """
    if not fractions:
        raise ValueError(f"no usable blocks to estimate the label-statistics table from (source: {source!r})")
    z_values = sorted(fractions)
    means, stds, counts = [], [], []
    for z in z_values:
        arr = np.stack(fractions[z]).astype(np.float64)  # (n_blocks, L)
        means.append(arr.mean(axis=0))
        if arr.shape[0] < 2:
            logger.warning(
                "label statistics: z = %d has %d block(s); its std is set to 0 (estimate from >= 2 "
                "blocks, the paper used 10-20 per z)",
                z,
                arr.shape[0],
            )
            stds.append(np.zeros(arr.shape[1]))
        else:
            stds.append(arr.std(axis=0, ddof=min(ddof, arr.shape[0] - 1)))
        counts.append(int(arr.shape[0]))
    return LabelStatsTable(
        classes=tuple(classes),
        z_values=tuple(z_values),
        mean=np.stack(means),
        std=np.stack(stds),
        n_blocks=tuple(counts),
        source=source,
    )


def estimate_label_stats(
    samples: Iterable[tuple[int, np.ndarray]],
    classes: Sequence[str],
    ignore_index: int = 255,
    source: str = "mask estimation",
    ddof: int = 1,
) -> LabelStatsTable:
    """Estimate p(c_l | z) from blocks that have pixel masks ("mask estimation", paper appendix B.2, Table 7).

    For each block the fraction of its labelled pixels (label != ``ignore_index``) of each class is
    computed; then, per z, the mean and the standard deviation over blocks of those fractions.

    Args:
        samples: iterable of ``(z, label_map)``: the block's low-resolution label and its (H, W) integer
            label map (values in [0, L) or ``ignore_index``).
        classes: the L class names in channel order.
        ignore_index: label of unlabelled pixels; blocks with no labelled pixel are skipped with a warning.
        source: free text stored in the table.
        ddof: delta degrees of freedom of the std over blocks (1: sample std, the default; 0: population std).
            A z with fewer than 2 blocks gets std 0 and a logged warning.

    Returns:
        the table (not yet checked against a datalist: call ``validate(z_in_data=...)``).

    Raises:
        ValueError: a label map holds values outside [0, L) other than ``ignore_index``, or no usable block.
    """
    n_l = len(classes)
    fractions: dict[int, list[np.ndarray]] = {}
    for k, (z, label_map) in enumerate(samples):
        labels = np.asarray(label_map.cpu() if isinstance(label_map, torch.Tensor) else label_map)
        labels = labels.reshape(-1).astype(np.int64)
        valid = labels != ignore_index
        if not valid.any():
            logger.warning("label statistics: block %d (z = %s) has no labelled pixel; skipped", k, z)
            continue
        values = labels[valid]
        bad = (values < 0) | (values >= n_l)
        if bad.any():
            raise ValueError(
                f"block {k} (z = {z}): label values {sorted(set(values[bad].tolist()))[:10]} are outside "
                f"[0, {n_l}) for classes {list(classes)} and are not ignore_index = {ignore_index}"
            )
        frac = np.bincount(values, minlength=n_l).astype(np.float64) / values.size
        fractions.setdefault(int(z), []).append(frac)
    return label_stats_from_fractions(fractions, classes, source, ddof)


def _read_visual_csv(path: str, classes: Sequence[str]) -> list[tuple[int, int, np.ndarray]]:
    """``[(line number, z, (L,) class values), ...]`` of a visual-estimate CSV, blank lines skipped, checked >= 0."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"visual-estimate CSV {path!r} not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        missing = [c for c in ["z", *classes] if c not in header]
        if missing:
            raise ValueError(
                f"visual-estimate CSV {path!r}: header {header} lacks column(s) {missing}; expected a 'z' "
                f"column and one column per class {list(classes)}"
            )
        rows: list[tuple[int, int, np.ndarray]] = []
        for line_no, rec in enumerate(reader, start=2):
            if all((v is None or str(v).strip() == "") for v in rec.values()):
                continue
            raw_z = (rec.get("z") or "").strip()
            try:
                z = int(raw_z)
            except ValueError:
                raise ValueError(
                    f"visual-estimate CSV {path!r}, line {line_no}: z = {raw_z!r}: expected an integer"
                ) from None
            values = []
            for c in classes:
                raw = (rec.get(c) or "").strip()
                try:
                    v = float(raw)
                except ValueError:
                    raise ValueError(
                        f"visual-estimate CSV {path!r}, line {line_no}: {c} = {raw!r}: expected a number"
                    ) from None
                if not math.isfinite(v) or v < 0:
                    raise ValueError(
                        f"visual-estimate CSV {path!r}, line {line_no}: {c} = {raw!r}: expected a value >= 0"
                    )
                values.append(v)
            rows.append((line_no, z, np.asarray(values, dtype=np.float64)))
    if not rows:
        raise ValueError(f"visual-estimate CSV {path!r}: no data rows")
    return rows


def _visual_fractions(
    path: str, rows: list[tuple[int, int, np.ndarray]], classes: Sequence[str], percent: bool, row_tolerance: float
) -> dict[int, list[np.ndarray]]:
    """``{z: [(L,) class fractions, ...]}`` of the CSV rows (percentages or fractions), each checked to sum to 1."""
    scale = 100.0 if percent else 1.0
    unit = "percentage in [0, 100]" if percent else "fraction in [0, 1]"
    fractions: dict[int, list[np.ndarray]] = {}
    for line_no, z, values in rows:
        frac = values / scale
        for c, v in zip(classes, frac):
            if v > 1.0:
                raise ValueError(
                    f"visual-estimate CSV {path!r}, line {line_no}: {c} = {v * scale:g}: expected a {unit}"
                )
        total = float(frac.sum())
        if abs(total - 1.0) > row_tolerance:
            raise ValueError(
                f"visual-estimate CSV {path!r}, line {line_no}: class values {(frac * scale).tolist()} "
                f"sum to {total * scale:g}, expected {scale:g} ± {row_tolerance * scale:g} (every pixel "
                "belongs to one class)"
            )
        fractions.setdefault(z, []).append(frac)
    return fractions


def estimate_label_stats_from_csv(
    csv_path: str | os.PathLike,
    classes: Sequence[str],
    percent: bool | None = None,
    row_tolerance: float = 0.02,
    source: str | None = None,
    ddof: int = 1,
) -> LabelStatsTable:
    """Estimate p(c_l | z) from visual estimates in a CSV ("visual approximation", appendix B.1, Table 6).

    CSV layout: a header with a ``z`` column and one column per class name (any order; other columns such
    as ``block`` or ``comment`` are ignored), then one row per examined block::

        z,non-tumour,tumour
        9,30,70
        9,45,55

    Values are fractions in [0, 1] or percentages in [0, 100]. With ``percent=None`` the file is read as
    percentages when any class value exceeds 1 (so a percentage file whose values are all <= 1 must pass
    ``percent=True``). Every row must sum to 1 (100 %) ± ``row_tolerance`` over the classes.

    Args:
        csv_path: the CSV file.
        classes: the L class names in channel order.
        percent: True / False to force the unit, None to detect it.
        row_tolerance: allowed deviation of a row's sum from 1 (as a fraction).
        source: free text stored in the table (default: "visual estimates from <file>").
        ddof: see :func:`estimate_label_stats`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a missing column, a non-integer z, a non-numeric / negative / out-of-range value or a row
            not summing to 1; the message names the file, the line and the value.
    """
    path = str(csv_path)
    rows = _read_visual_csv(path, classes)
    if percent is None:
        percent = any(float(v.max()) > 1.0 for _, _, v in rows)
        if percent:
            logger.info("visual-estimate CSV %s: values > 1 found, reading all values as percentages", path)
    fractions = _visual_fractions(path, rows, classes, percent, row_tolerance)
    src = source if source is not None else f"visual estimates from {Path(path).name}"
    return label_stats_from_fractions(fractions, classes, src, ddof)
