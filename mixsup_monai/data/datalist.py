"""The datalist contract every bundle reads: loading, path resolution and validation."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixsup_monai.data.identity import slide_id
from mixsup_monai.data.label_stats import LabelStatsTable
from mixsup_monai.utils.errors import InputError, InputNotFoundError, one_line
from mixsup_monai.wsi.labels import IGNORE_INDEX, read_label_map

__all__ = [
    "TASKS",
    "SECTIONS",
    "PATH_KEYS",
    "DatalistProblem",
    "DatalistError",
    "Requirement",
    "TASK_REQUIREMENTS",
    "check_datalist",
    "load_datalist",
    "requirements_table",
    "slides_of",
]

logger = logging.getLogger(__name__)

TASKS = ("mixsup", "lsr", "npl")
SECTIONS = ("training", "validation", "test")
#: slide keys that hold file paths; resolved against the datalist's folder when relative.
PATH_KEYS = ("image", "mask", "tissue_mask", "tumour_mask", "truth_mask")
#: top-level keys that hold file paths.
TOP_LEVEL_PATH_KEYS = ("label_stats",)
PROPORTION_TOLERANCE = 0.02
_DATALIST_DOC = "see README: datalist"
#: long side in pixels of the thumbnail the checker decodes per slide.
THUMBNAIL_SIZE = 512
#: level sizes of different scanners / pyramid writers differ by rounding; a mask may be 1 px off.
MASK_SIZE_TOLERANCE = 1


@dataclass(frozen=True)
class DatalistProblem:
    """One problem of a datalist, located precisely enough to fix it.

    Attributes:
        file: the datalist path (or ``"<dict>"``).
        where: ``"training[3]"``-style location, or ``""`` for the top level.
        key: the offending key, e.g. ``"blocks[2].location"``.
        message: what was found and what was expected.
        image: the slide's ``image`` value when known.
    """

    file: str
    where: str
    key: str
    message: str
    image: str | None = None

    def __str__(self) -> str:
        slide = f" ({self.image})" if self.image else ""
        where = f"{self.where}{slide} " if self.where else ""
        return f"{self.file}: {where}key {self.key!r}: {self.message}"


class DatalistError(ValueError):
    """Raised when a datalist breaks the contract; lists every problem found, not only the first."""

    def __init__(self, problems: list[DatalistProblem]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"datalist has {len(problems)} problem(s):\n{lines}")

    def summary_line(self) -> str:
        """The one line a failed command or bundle run prints after ``error: `` (the first problem, the count).

        ``mixsup_monai.utils.errors.error_line`` calls it (duck-typed: utils imports nothing from data).
        """
        if not self.problems:
            return f"datalist breaks the contract: {_DATALIST_DOC}"
        first = self.problems[0]
        problem = one_line(str(first).removeprefix(f"{first.file}: "))
        return (
            f"datalist has {len(self.problems)} problem(s) ({first.file}): the first is {problem}; "
            f"list them all with `python -m mixsup_monai check-datalist {first.file}`"
        )


def _resolve(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or not value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _read_json(path: Path) -> dict:
    """The datalist file's JSON object; a missing file, a folder, bad JSON or no object is one :class:`InputError`."""
    if path.is_dir():
        raise InputError("datalist is a folder", path, f"expected a datalist JSON file ({_DATALIST_DOC})")
    if not path.is_file():
        raise InputNotFoundError(
            "datalist not found", path, f"this path does not exist; expected a JSON file ({_DATALIST_DOC})"
        )
    try:
        data = json.loads(path.read_bytes())
    except PermissionError as e:
        raise InputError(
            "datalist is not readable", path, "no read permission for this user; `chmod a+r` it or ask its owner"
        ) from e
    except json.JSONDecodeError as e:
        raise InputError("datalist is not valid JSON", path, f"{e.msg} at line {e.lineno}, column {e.colno}") from e
    except UnicodeDecodeError as e:
        raise InputError("datalist is not a text file", path, f"expected UTF-8 JSON ({e.reason})") from e
    if not isinstance(data, dict):
        raise InputError(
            "datalist is not a JSON object",
            path,
            f'expected {{"task": ..., "classes": ..., "training": [...]}} at the top level, got {type(data).__name__}',
        )
    return data


def _resolved_copy(data: Mapping, base: Path) -> dict:
    out = dict(data)
    for key in TOP_LEVEL_PATH_KEYS:
        if key in out:
            out[key] = _resolve(out[key], base)
    for section in SECTIONS:
        slides = out.get(section)
        if isinstance(slides, list):
            out[section] = [
                {k: (_resolve(v, base) if k in PATH_KEYS else v) for k, v in s.items()} if isinstance(s, dict) else s
                for s in slides
            ]
    return out


class _Checker:
    """Collects every problem of one datalist (implementation of :func:`check_datalist`)."""

    def __init__(
        self,
        data: Mapping,
        file: str,
        task: str | None,
        open_slides: bool,
        check_mask_values: bool,
        without: Collection[str] = (),
    ):
        self.data = data
        self.file = file
        self.expected_task = task
        self.open_slides = open_slides
        self.check_mask_values = check_mask_values
        self.without = frozenset(without)
        self.problems: list[DatalistProblem] = []
        self._table: tuple[LabelStatsTable | None, str | None] | None = None

    def add(self, where: str, key: str, message: str, image: str | None = None) -> None:
        self.problems.append(DatalistProblem(self.file, where, key, message, image))

    def run(self) -> list[DatalistProblem]:
        data = self.data
        task = data.get("task")
        if task not in TASKS:
            self.add("", "task", f"got {task!r}, expected one of {list(TASKS)}")
        elif self.expected_task is not None and task != self.expected_task:
            self.add("", "task", f"got {task!r}, but this bundle trains {self.expected_task!r}")
        if not isinstance(data.get("name", ""), str):
            self.add("", "name", f"expected a string, got {data.get('name')!r}")
        classes = data.get("classes")
        if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
            self.add("", "classes", f"expected a list of >= 2 pixel class names, got {classes!r}")
            classes = None
        elif len(set(classes)) != len(classes):
            self.add("", "classes", f"class names must be unique, got {classes!r}")
        elif len(classes) > IGNORE_INDEX:
            self.add("", "classes", f"at most {IGNORE_INDEX} classes (255 is 'ignore'), got {len(classes)}")
        self.classes = classes
        slide_classes = data.get("slide_classes")
        if slide_classes is not None and not (isinstance(slide_classes, list) and len(slide_classes) >= 2):
            self.add("", "slide_classes", f"expected a list of >= 2 slide-level class names, got {slide_classes!r}")
            slide_classes = None
        # MixSup's slide labels are binary unless the datalist names its slide-level classes (pN stages, ...)
        self.num_slide_classes = len(slide_classes) if slide_classes else 2
        for key in TOP_LEVEL_PATH_KEYS:
            if key in data and not Path(str(data[key])).is_file():
                self.add("", key, f"file {data[key]!r} does not exist")
        if not any(isinstance(data.get(s), list) and data.get(s) for s in SECTIONS):
            self.add("", "training", f"no slides: expected a non-empty list in one of {list(SECTIONS)}")
        seen: dict[str, str] = {}
        names: dict[str, tuple[str, str]] = {}
        for section in SECTIONS:
            slides = data.get(section, [])
            if not isinstance(slides, list):
                self.add("", section, f"expected a list of slides, got {type(slides).__name__}")
                continue
            for i, slide in enumerate(slides):
                where = f"{section}[{i}]"
                if not isinstance(slide, dict):
                    self.add(where, "", f"expected a slide object, got {slide!r}")
                    continue
                image = slide.get("image")
                if isinstance(image, str) and image in seen:
                    self.add(where, "image", f"duplicate image, already listed as {seen[image]}", image)
                elif isinstance(image, str):
                    seen[image] = where
                    self._check_identity(where, image, names)
                self.check_slide(where, slide)
        if task in TASKS and not self.problems:
            self.check_task(task)
        return self.problems

    def _check_identity(self, where: str, image: str, names: dict[str, tuple[str, str]]) -> None:
        """Two different files with one :func:`~mixsup_monai.data.identity.slide_id` would share seeds and records."""
        sid = slide_id(image)
        if sid in names:
            other_where, other = names[sid]
            self.add(
                where,
                "image",
                f"slide name {sid!r} is also the name of {other_where} ({other}): a slide's file name without folder "
                "and suffix is its identity in seeds, statistics and round records; rename one of the files",
                image,
            )
        else:
            names[sid] = (where, image)

    # -- one slide -------------------------------------------------------------------------------
    def check_slide(self, where: str, slide: dict) -> None:
        image = slide.get("image")
        add = lambda key, msg: self.add(where, key, msg, image if isinstance(image, str) else None)  # noqa: E731
        info = None
        if not isinstance(image, str) or not image:
            add("image", f"expected a slide file path, got {image!r}")
        elif not Path(image).exists():
            add("image", "file does not exist")
        elif self.open_slides:
            info = self._slide_info(image, slide.get("mpp"), add)

        if "label" in slide:
            label = slide["label"]
            if isinstance(label, bool) or not isinstance(label, int):
                add("label", f"expected an integer slide label, got {label!r}")
            elif not 0 <= label < self.num_slide_classes:
                add("label", f"slide label {label} out of range: expected 0..{self.num_slide_classes - 1}")
        if "mpp" in slide:
            mpp = slide["mpp"]
            if isinstance(mpp, bool) or not isinstance(mpp, (int, float)) or not math.isfinite(mpp) or mpp <= 0:
                add("mpp", f"expected a positive number of microns per pixel, got {mpp!r}")
        if "proportions" in slide:
            self._check_proportions(slide["proportions"], add)
        for key in ("tissue_mask", "tumour_mask", "truth_mask"):
            if key in slide and not (isinstance(slide[key], str) and Path(slide[key]).is_file()):
                add(key, f"file {slide[key]!r} does not exist")
        if "mask" in slide:
            self._check_mask(slide, info, add)
        elif "regions" in slide:
            add("regions", "regions say where 'mask' is valid, but the slide has no 'mask'")
        if "regions" in slide:
            for j, box in enumerate(slide["regions"] if isinstance(slide["regions"], list) else [None]):
                self._check_box(f"regions[{j}]", box, info, add)
        if "blocks" in slide:
            blocks = slide["blocks"]
            if not isinstance(blocks, list):
                add("blocks", f"expected a list of blocks, got {type(blocks).__name__}")
                return
            for j, block in enumerate(blocks):
                if not isinstance(block, dict):
                    add(f"blocks[{j}]", f"expected {{'location': [x, y], 'size': [w, h], 'z': int}}, got {block!r}")
                    continue
                z = block.get("z")
                if isinstance(z, bool) or not isinstance(z, int):
                    add(f"blocks[{j}].z", f"expected an integer low-resolution label, got {z!r}")
                location, size = block.get("location"), block.get("size")
                box = list(location) + list(size) if _is_pair(location) and _is_pair(size) else None
                if box is None:
                    add(f"blocks[{j}]", f"expected 'location': [x, y] and 'size': [w, h], got {location!r}, {size!r}")
                else:
                    self._check_box(f"blocks[{j}]", box, info, add)

    def _slide_info(self, image: str, mpp: Any, add) -> Any:
        from mixsup_monai.wsi.reader import open_slide

        try:
            with open_slide(image) as wsi:
                # opening checked the headers and a probe per level; a thumbnail decodes the coarse level the
                # tissue detection reads, whole, so a damaged tile there is found now and not mid-run
                width, height = wsi.dimensions
                scale = THUMBNAIL_SIZE / max(width, height)
                wsi.read_scaled(out_size=(max(1, round(width * scale)), max(1, round(height * scale))))
                return wsi.info
        except Exception as e:  # any reader failure is a problem of this slide, reported with the rest
            add("image", f"unreadable slide: {e}")
            return None

    def _check_proportions(self, proportions: Any, add) -> None:
        if not isinstance(proportions, dict) or not proportions:
            add("proportions", f"expected {{class name: fraction}}, got {proportions!r}")
            return
        total, all_valid = 0.0, True
        for name, value in proportions.items():
            if self.classes is not None and name not in self.classes:
                add(f"proportions.{name}", f"class {name!r} is not in classes {self.classes}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                add(f"proportions.{name}", f"expected a fraction in [0, 1], got {value!r}")
                all_valid = False
            else:
                total += value
        if all_valid and abs(total - 1.0) > PROPORTION_TOLERANCE:  # a sum over invalid values says nothing more
            add("proportions", f"fractions sum to {total:.4f}, expected 1 ± {PROPORTION_TOLERANCE}")

    def _check_mask(self, slide: dict, info: Any, add) -> None:
        path = slide["mask"]
        if not (isinstance(path, str) and Path(path).is_file()):
            add("mask", f"file {path!r} does not exist")
            return
        level = slide.get("mask_level")
        if isinstance(level, bool) or not isinstance(level, int) or level < 0:
            add("mask_level", f"expected a non-negative integer pyramid level for 'mask', got {level!r}")
            return
        try:
            label_map = read_label_map(path)
        except Exception as e:
            add("mask", f"unreadable label map: {e}")
            return
        if info is not None:
            if level >= info.level_count:
                add("mask_level", f"level {level} does not exist: the slide has {info.level_count} levels")
                return
            w, h = info.level_dimensions[level]
            mh, mw = label_map.shape[:2]
            if abs(mw - w) > MASK_SIZE_TOLERANCE or abs(mh - h) > MASK_SIZE_TOLERANCE:
                add("mask", f"mask is {mw} x {mh} px but slide level {level} is {w} x {h} px (width x height)")
        if self.check_mask_values and self.classes is not None:
            values = np.unique(label_map)
            bad = [int(v) for v in values if v >= len(self.classes) and v != IGNORE_INDEX]
            if bad:
                add("mask", f"label values {bad} are not class indices 0..{len(self.classes) - 1} or 255 (ignore)")

    def _check_box(self, key: str, box: Any, info: Any, add) -> None:
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(_is_int(v) for v in box)):
            add(key, f"expected [x, y, w, h] integers in level-0 pixels, got {box!r}")
            return
        x, y, w, h = box
        if w <= 0 or h <= 0 or x < 0 or y < 0:
            add(key, f"box {box} must have x, y >= 0 and w, h > 0")
        elif info is not None:
            width, height = info.level_dimensions[0]
            if x + w > width or y + h > height:
                add(key, f"box {box} (x, y, w, h) extends outside the slide ({width} x {height} px at level 0)")

    # -- whole datalist, per task ---------------------------------------------------------------------
    @property
    def training(self) -> list:
        return self.data.get("training") or []

    def label_stats_table(self) -> tuple[LabelStatsTable | None, str | None]:
        """``(table, None)``, or ``(None, why not)`` when the top-level ``label_stats`` is absent or unreadable.

        Read once (the ``label_stats`` and ``label_stats_rows`` requirements share it); ``why not`` is None
        when the datalist names no table.
        """
        if self._table is None:
            path = self.data.get("label_stats")
            if not path:
                self._table = (None, None)
            else:
                try:
                    self._table = (LabelStatsTable.read(path), None)
                except (ValueError, OSError) as e:  # FileNotFoundError / unreadable / not the table layout
                    self._table = (None, str(e))
        return self._table

    def check_task(self, task: str) -> None:
        """Check the task's start-up requirements (:data:`TASK_REQUIREMENTS`), in order."""
        for requirement in TASK_REQUIREMENTS[task]:
            if requirement.name in self.without:
                continue
            before = len(self.problems)
            requirement.check(self)
            if requirement.stops and len(self.problems) > before:
                return


# -- the start-up requirements of each task -----------------------------------------------------------
@dataclass(frozen=True)
class Requirement:
    """One start-up requirement of a task: the README's sentence, the key its problems name, the check.

    :data:`TASK_REQUIREMENTS` is the one place they are declared: the checker runs them
    (:func:`check_datalist`, and so every bundle's ``load_datalist(..., task=...)``) and the README's
    datalist table is :func:`requirements_table`.

    Attributes:
        name: short id (``without=`` of :func:`check_datalist` / :func:`load_datalist` skips it by name).
        description: what the datalist must have, Markdown for the README table.
        key: the datalist key its problems name.
        check: adds its problems to the checker (``_Checker.add``); runs only on a datalist with no other problem.
        stops: when it fails, the task's later requirements are not checked (they need what it checks).
    """

    name: str
    description: str
    key: str
    check: Callable[[_Checker], None]
    stops: bool = False


def _training_slides(c: _Checker) -> None:
    if not c.training:
        c.add("", "training", f"task {c.data.get('task')!r} needs training slides, got none")


def _negative_slides(c: _Checker) -> None:
    if 0 not in [s.get("label") for s in c.training if "label" in s]:
        c.add("", "training", "MixSup needs negative training slides ('label': 0), found none")


def _positive_slides(c: _Checker) -> None:
    labels = [s.get("label") for s in c.training if "label" in s]
    if not any(label is not None and label > 0 for label in labels):
        c.add("", "training", "MixSup needs positive training slides ('label' > 0), found none")


def _pixel_labelled_slides(c: _Checker) -> None:
    if not any("mask" in s for s in c.training):
        c.add("", "training", "MixSup needs pixel-labelled training slides ('mask' + 'regions'), found none")


def _block_slides(c: _Checker) -> None:
    if not any(s.get("blocks") for s in c.training):
        c.add("", "training", "LSR needs training slides with 'blocks' (low-resolution labels), found none")


def _label_stats(c: _Checker) -> None:
    if not c.data.get("label_stats"):
        c.add(
            "",
            "label_stats",
            "LSR needs the p(c | z) table: no top-level 'label_stats'; name its JSON file here "
            "(`python -m mixsup_monai lsr-stats` estimates one)",
        )
        return
    table, error = c.label_stats_table()
    if table is None:
        c.add("", "label_stats", str(error))
        return
    for problem in table.problems(classes=c.classes, source_name="the datalist"):
        c.add("", "label_stats", f"{table.display_name}: {problem}")


def _label_stats_rows(c: _Checker) -> None:
    table, _ = c.label_stats_table()
    if table is None:  # no table to look z up in: _label_stats says why
        return
    rows = set(table.z_values)
    for section in SECTIONS:
        for i, slide in enumerate(c.data.get(section) or []):
            for j, block in enumerate(slide.get("blocks") or []):
                z = block.get("z")
                if _is_int(z) and z not in rows:
                    c.add(
                        f"{section}[{i}]",
                        f"blocks[{j}].z",
                        f"z = {z} has no row in the label-statistics table {table.path!r} "
                        f"(its z values are {list(table.z_values)}); add a row for z = {z}",
                        slide.get("image"),
                    )


def _mask_slide(c: _Checker) -> None:
    if not any("mask" in s for s in c.training):
        c.add("", "training", "NPL needs a few fully labelled training slides ('mask'), found none")


def _proportion_slides(c: _Checker) -> None:
    if not any("proportions" in s for s in c.training):
        c.add("", "training", "NPL needs training slides with 'proportions', found none")


def _tumour_masks(c: _Checker) -> None:
    for i, slide in enumerate(c.training):
        if slide.get("proportions") and not slide.get("tumour_mask"):
            c.add(
                f"training[{i}]",
                "tumour_mask",
                "slide has 'proportions' but no 'tumour_mask' (the tumour outline its proportions refer to): "
                "add a label map 1 = tumour, 0 = other tissue, 255 = glass",
                slide.get("image"),
            )


_TRAINING = Requirement("training", "training slides", "training", _training_slides, stops=True)

#: every task's start-up requirements, checked in order on a datalist with no other problem: the one place
#: they are declared (checker, bundles' ``load_datalist(..., task=...)`` and README table all read it).
TASK_REQUIREMENTS: dict[str, tuple[Requirement, ...]] = {
    "mixsup": (
        _TRAINING,
        Requirement("negative_slides", 'a negative training slide (`"label": 0`)', "training", _negative_slides),
        Requirement("positive_slides", 'a positive training slide (`"label"` > 0)', "training", _positive_slides),
        Requirement(
            "pixel_labels",
            "a pixel-labelled training slide (`mask` + `mask_level`, valid inside `regions`)",
            "training",
            _pixel_labelled_slides,
        ),
    ),
    "lsr": (
        _TRAINING,
        Requirement("blocks", "a training slide with `blocks` (low-resolution labels z)", "training", _block_slides),
        Requirement(
            "label_stats",
            'a top-level `label_stats`: the p(c | z) table (JSON `{"classes", "source", "stats"}`), readable, '
            "means in [0, 1] summing to 1 ± 0.02, std finite in [0, 0.5], one row per z, `classes` equal to the "
            "datalist's (same order)",
            "label_stats",
            _label_stats,
        ),
        Requirement(
            "label_stats_rows",
            "a row of that table for the `z` of every block of every section",
            "blocks[j].z",
            _label_stats_rows,
        ),
    ),
    "npl": (
        _TRAINING,
        Requirement("mask_slide", "a fully labelled training slide (`mask` + `mask_level`)", "training", _mask_slide),
        Requirement("proportions", "a training slide with `proportions`", "training", _proportion_slides),
        Requirement(
            "tumour_mask",
            "a `tumour_mask` on every training slide with `proportions` (label map 1 = tumour, 0 = other "
            "tissue, 255 = glass)",
            "tumour_mask",
            _tumour_masks,
        ),
    ),
}
REQUIREMENT_NAMES = frozenset(r.name for reqs in TASK_REQUIREMENTS.values() for r in reqs)


def requirements_table() -> str:
    """The README's per-task requirements table (Markdown), rendered from :data:`TASK_REQUIREMENTS`.

    One row per requirement, listing the tasks that have it; ``tests/data/test_datalist.py`` checks that
    README.md's datalist section holds exactly this table.
    """
    lines = ["| task | a datalist of the task has | a problem names the key |", "|---|---|---|"]
    seen: list[Requirement] = []
    for requirements in TASK_REQUIREMENTS.values():
        seen.extend(r for r in requirements if r not in seen)
    for r in seen:
        tasks = ", ".join(t for t in TASKS if r in TASK_REQUIREMENTS[t])
        lines.append(f"| {tasks} | {r.description.replace('|', chr(92) + '|')} | `{r.key}` |")
    return "\n".join(lines) + "\n"


def _check_without(without: Collection[str]) -> frozenset[str]:
    unknown = sorted(set(without) - REQUIREMENT_NAMES)
    if unknown:
        raise ValueError(f"without: unknown requirement(s) {unknown}; expected names of {sorted(REQUIREMENT_NAMES)}")
    return frozenset(without)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_pair(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) for v in value)


def check_datalist(
    datalist: str | Path | Mapping,
    task: str | None = None,
    open_slides: bool = True,
    check_mask_values: bool = True,
    base_dir: str | Path | None = None,
    without: Collection[str] = (),
) -> list[DatalistProblem]:
    """Check a datalist against the contract and return every problem found (empty when valid).

    Checks: the top-level keys (``task``, ``classes``), that slide/mask files exist and slides open and decode
    (:func:`~mixsup_monai.wsi.open_slide` checks TIFF headers and a probe per level; here a thumbnail is decoded too),
    slide labels in range, proportions with known class names summing to 1 ± 0.02, masks whose size
    matches their ``mask_level`` and whose values are class indices or 255, regions and blocks inside
    their slide, duplicate images, and, on a datalist with no other problem, the task's start-up
    requirements (:data:`TASK_REQUIREMENTS`: e.g. MixSup: negative, positive and pixel-labelled training
    slides; LSR: a valid p(c | z) table with a row for every block's z; NPL: a ``tumour_mask`` on every
    slide with ``proportions``).

    Args:
        datalist: path of the JSON file, or an already loaded dictionary.
        task: the task the caller trains (``"mixsup"``, ``"lsr"``, ``"npl"``); ``None`` accepts any.
        open_slides: open every slide to check readability and sizes (slower; off for a syntax check).
        check_mask_values: decode masks and check their values.
        base_dir: folder that relative paths resolve against when ``datalist`` is a dictionary.
        without: names of requirements (:attr:`Requirement.name`) not to check, e.g.
            ``("label_stats", "label_stats_rows")`` for a datalist whose table is yet to be estimated.
    """
    if isinstance(datalist, Mapping):
        file = "<datalist>"
        data = _resolved_copy(datalist, Path(base_dir or ".").resolve())
    else:
        path = Path(datalist).expanduser().resolve()
        file = str(path)
        data = _resolved_copy(_read_json(path), path.parent)
    if task is not None and task not in TASKS:
        raise ValueError(f"check_datalist: task must be one of {list(TASKS)}, got {task!r}")
    return _Checker(data, file, task, open_slides, check_mask_values, _check_without(without)).run()


def load_datalist(
    path: str | Path,
    task: str | None = None,
    check: bool = True,
    open_slides: bool = True,
    label_stats: str | os.PathLike | None = None,
    without: Collection[str] = (),
) -> dict:
    """Load a datalist JSON with every relative path resolved against the datalist's folder.

    Args:
        path: the datalist file.
        task: the task the caller trains; a datalist of another task is an error.
        check: validate the contract first (see :func:`check_datalist`) and raise :class:`DatalistError`
            listing every problem.
        open_slides: when checking, also open each slide.
        label_stats: a p(c | z) table file that replaces the datalist's top-level ``label_stats`` (the LSR
            bundle's ``--label_stats``), checked as if the datalist named it; relative to the current folder.
        without: names of requirements not to check (see :func:`check_datalist`).

    Returns:
        The datalist dictionary with absolute paths (``image``, ``mask``, ``tissue_mask``, ...,
        top-level ``label_stats``) and a ``"datalist_path"`` key.
    """
    path = Path(path).expanduser().resolve()
    data = _resolved_copy(_read_json(path), path.parent)
    if label_stats:
        data["label_stats"] = str(Path(label_stats).expanduser().resolve())
    if check:
        checker = _Checker(data, str(path), task, open_slides, True, _check_without(without))
        problems = checker.run()
        if problems:
            raise DatalistError(problems)
    data["datalist_path"] = str(path)
    return data


def slides_of(datalist: Mapping, sections: str | Iterable[str]) -> list[dict]:
    """The slides of one or several sections (``"training"``, ...) of a loaded datalist."""
    names = [sections] if isinstance(sections, str) else list(sections)
    for name in names:
        if name not in SECTIONS:
            raise ValueError(f"unknown datalist section {name!r}; expected one of {list(SECTIONS)}")
    return [s for name in names for s in datalist.get(name, [])]
