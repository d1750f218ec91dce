"""The datalist contract every bundle reads: loading, path resolution and validation."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixsup_monai.utils.errors import InputError, InputNotFoundError
from mixsup_monai.wsi.labels import IGNORE_INDEX, read_label_map

__all__ = [
    "TASKS",
    "SECTIONS",
    "PATH_KEYS",
    "DatalistProblem",
    "DatalistError",
    "check_datalist",
    "load_datalist",
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

    def __init__(self, data: Mapping, file: str, task: str | None, open_slides: bool, check_mask_values: bool):
        self.data = data
        self.file = file
        self.expected_task = task
        self.open_slides = open_slides
        self.check_mask_values = check_mask_values
        self.problems: list[DatalistProblem] = []

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
                self.check_slide(where, slide)
        if task in TASKS and not self.problems:
            self.check_task(task)
        return self.problems

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
                return wsi.info
        except Exception as e:  # any reader failure is a problem of this slide, reported with the rest
            add("image", f"unreadable slide: {e}")
            return None

    def _check_proportions(self, proportions: Any, add) -> None:
        if not isinstance(proportions, dict) or not proportions:
            add("proportions", f"expected {{class name: fraction}}, got {proportions!r}")
            return
        total = 0.0
        for name, value in proportions.items():
            if self.classes is not None and name not in self.classes:
                add(f"proportions.{name}", f"class {name!r} is not in classes {self.classes}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                add(f"proportions.{name}", f"expected a fraction in [0, 1], got {value!r}")
            else:
                total += value
        if abs(total - 1.0) > PROPORTION_TOLERANCE:
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
    def check_task(self, task: str) -> None:
        training = self.data.get("training") or []
        if not training:
            self.add("", "training", f"task {task!r} needs training slides, got none")
            return
        if task == "mixsup":
            labels = [s.get("label") for s in training if "label" in s]
            if 0 not in labels:
                self.add("", "training", "MixSup needs negative training slides ('label': 0), found none")
            if not any(label is not None and label > 0 for label in labels):
                self.add("", "training", "MixSup needs positive training slides ('label' > 0), found none")
            if not any("mask" in s for s in training):
                self.add("", "training", "MixSup needs pixel-labelled training slides ('mask' + 'regions'), found none")
        elif task == "lsr":
            if not any(s.get("blocks") for s in training):
                self.add("", "training", "LSR needs training slides with 'blocks' (low-resolution labels), found none")
        elif task == "npl":
            if not any("mask" in s for s in training):
                self.add("", "training", "NPL needs a few fully labelled training slides ('mask'), found none")
            if not any("proportions" in s for s in training):
                self.add("", "training", "NPL needs training slides with 'proportions', found none")


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
) -> list[DatalistProblem]:
    """Check a datalist against the contract and return every problem found (empty when valid).

    Checks: the top-level keys (``task``, ``classes``), that slide/mask files exist and slides open,
    slide labels in range, proportions with known class names summing to 1 ± 0.02, masks whose size
    matches their ``mask_level`` and whose values are class indices or 255, regions and blocks inside
    their slide, duplicate images, and what the task needs (e.g. MixSup: negative, positive and
    pixel-labelled training slides).

    Args:
        datalist: path of the JSON file, or an already loaded dictionary.
        task: the task the caller trains (``"mixsup"``, ``"lsr"``, ``"npl"``); ``None`` accepts any.
        open_slides: open every slide to check readability and sizes (slower; off for a syntax check).
        check_mask_values: decode masks and check their values.
        base_dir: folder that relative paths resolve against when ``datalist`` is a dictionary.
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
    return _Checker(data, file, task, open_slides, check_mask_values).run()


def load_datalist(
    path: str | Path,
    task: str | None = None,
    check: bool = True,
    open_slides: bool = True,
) -> dict:
    """Load a datalist JSON with every relative path resolved against the datalist's folder.

    Args:
        path: the datalist file.
        task: the task the caller trains; a datalist of another task is an error.
        check: validate the contract first (see :func:`check_datalist`) and raise :class:`DatalistError`
            listing every problem.
        open_slides: when checking, also open each slide.

    Returns:
        The datalist dictionary with absolute paths (``image``, ``mask``, ``tissue_mask``, ...,
        top-level ``label_stats``) and a ``"datalist_path"`` key.
    """
    path = Path(path).expanduser().resolve()
    data = _resolved_copy(_read_json(path), path.parent)
    if check:
        problems = _Checker(data, str(path), task, open_slides, check_mask_values=True).run()
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
