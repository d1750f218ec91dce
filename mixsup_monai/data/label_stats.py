"""The p(c | z) label-statistics table a datalist's top-level ``label_stats`` names: file format, validation, z lookup.

The datalist contract owns the files it names, so the table's format lives here, below the methods; the
estimation of a table (from masks or visual estimates) is LSR's and lives in
:mod:`mixsup_monai.methods.lsr.label_stats`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["LABEL_STATS_LAYOUT", "LabelStatsTable", "z_to_row_index"]

#: the table's JSON layout, as error messages show it.
LABEL_STATS_LAYOUT = '{"classes": [...], "source": "...", "stats": [{"z": 0, "mean": [...], "std": [...]}]}'
#: largest possible standard deviation of a fraction in [0, 1] (half the blocks at 0, half at 1).
_MAX_FRACTION_STD = 0.5


def z_to_row_index(z: torch.Tensor, z_values: torch.Tensor, table_name: str = "the label-statistics table"):
    """Map low-resolution labels to rows of a label-statistics table.

    Args:
        z: (B,) integer tensor of low-resolution labels.
        z_values: (Z,) sorted integer tensor, the table's z values (``LabelStatsTable.z_values``).
        table_name: how the table is named in the error message.

    Returns:
        (B,) long tensor of row indices into the table, on ``z``'s device.

    Raises:
        ValueError: when a z value has no row in the table; the message names the missing values and the
            table's z values.
    """
    z = z.to(device=z_values.device, dtype=torch.long).reshape(-1)
    if z_values.numel() == 0:
        raise ValueError(f"{table_name} has no rows; cannot look up z values {sorted(set(z.tolist()))}")
    idx = torch.searchsorted(z_values, z).clamp_(max=z_values.numel() - 1)
    unknown = z_values[idx] != z
    if bool(unknown.any()):
        missing = sorted(set(z[unknown].tolist()))
        raise ValueError(
            f"low-resolution label(s) z = {missing} have no row in {table_name} "
            f"(its z values are {z_values.tolist()}); add a row for each z that occurs in the data"
        )
    return idx


@dataclass
class LabelStatsTable:
    """The table of label-count statistics p(c_l | z) = N(η_{l,z}, ρ_{l,z}²) used by label super-resolution.

    For every low-resolution label z (e.g. a bin of a block-level cancer probability) and every
    high-resolution class l, ``mean[z, l]`` = η_{l,z} is the expected fraction of the block's pixels of
    class l and ``std[z, l]`` = ρ_{l,z} its standard deviation across blocks with that z (Zhao et al.,
    "Label super resolution with inter-instance loss", Eq. 4, Table 1; Malkin et al., ICLR 2019).

    JSON file format (fractions in [0, 1], not percentages)::

        {"classes": ["non-tumour", "tumour"], "source": "mask estimation, 12 blocks per z",
         "stats": [{"z": 0, "mean": [0.97, 0.03], "std": [0.08, 0.08], "n_blocks": 12}, ...]}

    Rows are kept sorted by z; ``entry_index`` remembers each row's position in the file's ``stats``
    list so that errors name the key the user wrote (``stats[3].std[1]``).

    Attributes:
        classes: names of the L high-resolution classes, in network channel order.
        z_values: the Z low-resolution labels, sorted.
        mean: (Z, L) float array of η.
        std: (Z, L) float array of ρ. Tables with ρ = 0 exist (paper Table 1, row 0–20 %: 0.0 ± 0.1 %
            rounds to 0 in coarse tables); the losses stay finite with them, see ``rho_floor`` there.
        n_blocks: number of blocks each row was estimated from (None when unknown).
        source: free text: how the table was made.
        path: the file the table was loaded from (used in error messages), or None.
        entry_index: position of each (sorted) row in the file's ``stats`` list, for error messages.
    """

    classes: tuple[str, ...]
    z_values: tuple[int, ...]
    mean: np.ndarray
    std: np.ndarray
    n_blocks: tuple[int | None, ...] | None = None
    source: str = ""
    path: str | None = None
    entry_index: tuple[int, ...] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.classes = tuple(str(c) for c in self.classes)
        z_list = list(self.z_values)
        for i, z in enumerate(z_list):
            if isinstance(z, bool) or not isinstance(z, (int, np.integer)):
                raise ValueError(
                    f"{self.display_name}: {self._key(i)}.z = {z!r}: expected an integer low-resolution label"
                )
        n_z, n_l = len(z_list), len(self.classes)
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        for name, arr in (("mean", mean), ("std", std)):
            if arr.shape != (n_z, n_l):
                raise ValueError(
                    f"{self.display_name}: {name} has shape {arr.shape}, expected (Z, L) = ({n_z}, {n_l}) "
                    f"for {n_z} z values and classes {list(self.classes)}"
                )
        entry = tuple(range(n_z)) if self.entry_index is None else tuple(self.entry_index)
        blocks = None if self.n_blocks is None else tuple(self.n_blocks)
        if len(entry) != n_z or (blocks is not None and len(blocks) != n_z):
            raise ValueError(f"{self.display_name}: entry_index / n_blocks must have one value per z ({n_z})")
        order = sorted(range(n_z), key=lambda i: int(z_list[i]))
        self.z_values = tuple(int(z_list[i]) for i in order)
        self.mean = mean[order] if n_z else mean
        self.std = std[order] if n_z else std
        self.entry_index = tuple(entry[i] for i in order)
        self.n_blocks = None if blocks is None else tuple(blocks[i] for i in order)

    # ------------------------------------------------------------------ naming helpers
    @property
    def display_name(self) -> str:
        """How error messages name the table: its file, or "(in memory)"."""
        return f"label-statistics table {self.path!r}" if self.path else "label-statistics table (in memory)"

    def _key(self, row: int) -> str:
        entry = row if self.entry_index is None or row >= len(self.entry_index) else self.entry_index[row]
        return f"stats[{entry}]"

    @property
    def num_classes(self) -> int:
        """L, the number of high-resolution classes."""
        return len(self.classes)

    # ------------------------------------------------------------------ validation
    def validate(
        self,
        z_in_data: Iterable[int] | None = None,
        source_name: str = "the data",
        classes: Sequence[str] | None = None,
        sum_tolerance: float = 0.02,
    ) -> LabelStatsTable:
        """Check the table's values, and optionally that it covers the data (the checks of :meth:`problems`).

        Args:
            z_in_data: the low-resolution labels that occur in the data (e.g. the datalist's blocks), or None.
            source_name: how the data is named in error messages (e.g. the datalist's path).
            classes: the datalist's class names in channel order, or None to skip that check.
            sum_tolerance: allowed deviation of a row's sum of means from 1.

        Returns:
            self, for chaining.

        Raises:
            ValueError: listing every problem found, each naming the file, the key (``stats[3].std[1]``),
                the value and what was expected.
        """
        problems = self.problems(z_in_data, source_name, classes, sum_tolerance)
        if problems:
            raise ValueError(f"{self.display_name} is invalid:\n  - " + "\n  - ".join(problems))
        return self

    def problems(
        self,
        z_in_data: Iterable[int] | None = None,
        source_name: str = "the data",
        classes: Sequence[str] | None = None,
        sum_tolerance: float = 0.02,
    ) -> list[str]:
        """Every problem of the table's values, and optionally of its coverage of the data (empty when valid).

        Checks: no duplicate z; every mean finite and in [0, 1]; the means of a row sum to
        1 ± ``sum_tolerance`` over classes; every std finite, ≥ 0 and ≤ 0.5 (the largest possible std of a
        fraction); ``n_blocks`` ≥ 0; ``classes`` (when given) equal to the table's classes, in order; every
        z in ``z_in_data`` has a row. Arguments as in :meth:`validate`.

        Returns:
            One sentence per problem, naming the key (``stats[3].std[1]``), the value and what was expected
            (not the file: callers prefix :attr:`display_name`).
        """
        problems: list[str] = []
        seen: dict[int, int] = {}
        for row, z in enumerate(self.z_values):
            if z in seen:
                problems.append(
                    f"{self._key(row)}.z = {z} appears more than once (also {self._key(seen[z])}); "
                    "expected exactly one row per z"
                )
            else:
                seen[z] = row
        for row in range(len(self.z_values)):
            problems.extend(self._row_problems(row, sum_tolerance))
        if not self.z_values:
            problems.append("stats has no rows: expected one row per low-resolution label z")
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            problems.append(f"classes = {list(self.classes)}: expected one or more distinct class names")
        if classes is not None and tuple(str(c) for c in classes) != self.classes:
            same_set = set(map(str, classes)) == set(self.classes)
            problems.append(
                f"classes = {list(self.classes)} do not match the classes of {source_name} {list(classes)}"
                + (" (same names, different order: the order is the network's channel order)" if same_set else "")
            )
        if z_in_data is not None:
            missing = sorted({int(z) for z in z_in_data} - set(self.z_values))
            if missing:
                problems.append(
                    f"z values {missing} occur in {source_name} but have no row in the table "
                    f"(table z values: {list(self.z_values)}); add a row for each"
                )
        return problems

    def _row_problems(self, row: int, sum_tolerance: float) -> list[str]:
        """The problems of one row's values (means, stds, their sum, ``n_blocks``), as :meth:`validate` words them."""
        problems: list[str] = []
        key = self._key(row)
        for l_idx in range(self.num_classes):
            m = float(self.mean[row, l_idx])
            if not math.isfinite(m) or m < 0.0 or m > 1.0:
                hint = " (looks like a percentage: divide by 100)" if 1.0 < m <= 100.0 else ""
                problems.append(f"{key}.mean[{l_idx}] = {m!r}: expected a fraction in [0, 1]{hint}")
            s = float(self.std[row, l_idx])
            if not math.isfinite(s) or s < 0.0:
                problems.append(
                    f"{key}.std[{l_idx}] = {s!r}: expected a finite standard deviation >= 0 "
                    "(use 0.0 when every block had the same fraction)"
                )
            elif s > _MAX_FRACTION_STD:
                problems.append(
                    f"{key}.std[{l_idx}] = {s!r}: expected <= {_MAX_FRACTION_STD}, the largest possible "
                    "std of a fraction (a percentage? divide by 100)"
                )
        row_sum = float(np.sum(self.mean[row]))
        if math.isfinite(row_sum) and abs(row_sum - 1.0) > sum_tolerance:
            problems.append(
                f"{key}.mean = {self.mean[row].tolist()} sums to {row_sum:.4f} over classes "
                f"{list(self.classes)}: expected 1 ± {sum_tolerance}"
            )
        if self.n_blocks is not None:
            nb = self.n_blocks[row]
            if nb is not None and (isinstance(nb, bool) or not isinstance(nb, (int, np.integer)) or nb < 0):
                problems.append(f"{key}.n_blocks = {nb!r}: expected a non-negative integer")
        return problems

    # ------------------------------------------------------------------ I/O
    @classmethod
    def load(
        cls, path: str | os.PathLike, classes: Sequence[str] | None = None, sum_tolerance: float = 0.02
    ) -> LabelStatsTable:
        """Read and validate a table from its JSON file (format in the class docstring).

        Args:
            path: the JSON file.
            classes: the datalist's class names in channel order; when given they must equal the table's.
            sum_tolerance: see :meth:`validate`.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: malformed JSON, missing keys, wrong lengths or invalid values; the message names the
                file, the key and the value.
        """
        return cls.read(path).validate(classes=classes, source_name="the datalist", sum_tolerance=sum_tolerance)

    @classmethod
    def read(cls, path: str | os.PathLike) -> LabelStatsTable:
        """Read a table from its JSON file, checking its layout (keys, types, lengths) but not its values.

        :meth:`load` also validates the values; the datalist checker reads with this and reports every
        value problem (:meth:`problems`) with the datalist's slide and key.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: malformed JSON or not the table layout; the message names the file and the key.
        """
        path_str = str(path)
        if not Path(path_str).is_file():
            raise FileNotFoundError(f"label-statistics table {path_str!r} not found")
        try:
            with open(path_str, encoding="utf-8") as f:
                raw = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"label-statistics table {path_str!r}: not valid JSON ({e})") from e
        except UnicodeDecodeError as e:
            raise ValueError(f"label-statistics table {path_str!r}: not a UTF-8 text file ({e.reason})") from e
        return cls.from_dict(raw, path=path_str)

    @classmethod
    def from_dict(cls, raw: Any, path: str | None = None) -> LabelStatsTable:
        """Build a table from the parsed JSON structure, checking keys, types and lengths (not values).

        Use :meth:`validate` for the value checks (:meth:`load` does both).
        """
        name = f"label-statistics table {path!r}" if path else "label-statistics table (in memory)"
        expected = LABEL_STATS_LAYOUT
        if not isinstance(raw, dict):
            raise ValueError(f"{name}: top level is a {type(raw).__name__}, expected an object {expected}")
        if "classes" not in raw and "stats" not in raw:
            # another layout altogether (e.g. {"0": {"tumour": [mean, std]}}): say which one is expected
            keys = sorted(map(str, raw))
            shown = keys[:5] + (["..."] if len(keys) > 5 else [])
            raise ValueError(f"{name}: top-level keys {shown} are not the table layout: expected {expected}")
        classes = raw.get("classes")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or not classes:
            raise ValueError(f"{name}: classes = {classes!r}: expected a non-empty list of class names")
        stats = raw.get("stats")
        if not isinstance(stats, list):
            raise ValueError(f"{name}: stats = {stats!r}: expected a list of rows like {expected}")
        source = raw.get("source", "")
        if not isinstance(source, str):
            raise ValueError(f"{name}: source = {source!r}: expected a string")
        n_l = len(classes)
        z_values, means, stds, n_blocks = [], [], [], []
        for i, entry in enumerate(stats):
            if not isinstance(entry, dict):
                raise ValueError(f"{name}: stats[{i}] = {entry!r}: expected an object with keys z, mean, std")
            for key in ("z", "mean", "std"):
                if key not in entry:
                    raise ValueError(f"{name}: stats[{i}] has no {key!r} key; expected keys z, mean, std[, n_blocks]")
            z = entry["z"]
            if isinstance(z, bool) or not isinstance(z, int):
                raise ValueError(f"{name}: stats[{i}].z = {z!r}: expected an integer low-resolution label")
            row = {}
            for key in ("mean", "std"):
                values = entry[key]
                if not isinstance(values, list) or len(values) != n_l:
                    raise ValueError(
                        f"{name}: stats[{i}].{key} = {values!r}: expected a list of {n_l} numbers, "
                        f"one per class {classes}"
                    )
                for j, v in enumerate(values):
                    if isinstance(v, bool) or not isinstance(v, (int, float)):
                        raise ValueError(f"{name}: stats[{i}].{key}[{j}] = {v!r}: expected a number")
                row[key] = [float(v) for v in values]
            nb = entry.get("n_blocks")
            if nb is not None and (isinstance(nb, bool) or not isinstance(nb, int)):
                raise ValueError(f"{name}: stats[{i}].n_blocks = {nb!r}: expected an integer")
            z_values.append(z)
            means.append(row["mean"])
            stds.append(row["std"])
            n_blocks.append(nb)
        shape = (len(stats), n_l)
        return cls(
            classes=tuple(classes),
            z_values=tuple(z_values),
            mean=np.asarray(means, dtype=np.float64).reshape(shape),
            std=np.asarray(stds, dtype=np.float64).reshape(shape),
            n_blocks=tuple(n_blocks),
            source=source,
            path=path,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON structure of the table (rows in z order)."""
        stats = []
        for row, z in enumerate(self.z_values):
            entry: dict[str, Any] = {
                "z": int(z),
                "mean": [float(v) for v in self.mean[row]],
                "std": [float(v) for v in self.std[row]],
            }
            if self.n_blocks is not None and self.n_blocks[row] is not None:
                entry["n_blocks"] = int(self.n_blocks[row])
            stats.append(entry)
        return {"classes": list(self.classes), "source": self.source, "stats": stats}

    def save(self, path: str | os.PathLike) -> None:
        """Write the table as JSON (4-space indent), creating parent folders."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=4)
            f.write("\n")

    # ------------------------------------------------------------------ lookup
    def to_tensors(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (eta, rho): (Z, L) tensors of the means η and standard deviations ρ, rows in z order."""
        eta = torch.as_tensor(self.mean, dtype=dtype, device=device)
        rho = torch.as_tensor(self.std, dtype=dtype, device=device)
        return eta, rho

    def z_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(Z,) long tensor of the sorted z values (the lookup key of :func:`z_to_row_index`)."""
        return torch.as_tensor(self.z_values, dtype=torch.long, device=device).reshape(-1)

    def index_of(self, z: int | Sequence[int] | np.ndarray | torch.Tensor) -> int | torch.Tensor:
        """Row index of a z value (int in, int out) or of a batch of z values ((B,) in, (B,) long tensor out).

        Raises:
            ValueError: a z value has no row in the table.
        """
        scalar = isinstance(z, (int, np.integer)) and not isinstance(z, bool)
        z_t = torch.as_tensor(z).reshape(-1)
        idx = z_to_row_index(z_t, self.z_tensor(z_t.device), table_name=self.display_name)
        return int(idx[0]) if scalar else idx
