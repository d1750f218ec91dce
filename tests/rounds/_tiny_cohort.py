"""Tiny synthetic pyramidal slides with a MixSup datalist (no demo cohort needed, seconds to write)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mixsup_monai.wsi import write_pyramidal_tiff

SLIDE_SIZE = 512
MASK_LEVEL = 2


def make_slide(path: Path, tumour_boxes: list[list[int]], seed: int = 0) -> tuple[Path, Path]:
    """A 512 px slide: pink tissue in the middle, purple tumour in ``tumour_boxes`` (level 0), and its mask."""
    rng = np.random.default_rng(seed)
    img = np.full((SLIDE_SIZE, SLIDE_SIZE, 3), 245, np.uint8)
    tissue = (slice(64, 448), slice(64, 448))
    img[tissue] = (225, 150, 190)
    mask = np.zeros((SLIDE_SIZE, SLIDE_SIZE), np.uint8)
    for x, y, w, h in tumour_boxes:
        img[y : y + h, x : x + w] = (120, 60, 150)
        mask[y : y + h, x : x + w] = 1
    noise = rng.integers(-12, 12, size=img.shape)
    img = np.clip(img.astype(int) + noise * (img < 240), 0, 255).astype(np.uint8)
    write_pyramidal_tiff(path, img, mpp=1.0, tile_size=128, min_levels=3, min_level_size=64)
    from PIL import Image

    f = 2**MASK_LEVEL
    mask_path = path.with_suffix(".png")
    Image.fromarray(mask[::f, ::f]).save(mask_path)
    return path, mask_path


def make_cohort(root: Path) -> Path:
    """4 training slides (2 positive, one with a pixel-labelled region; 2 negative), 2 validation, 2 test slides."""
    root.mkdir(parents=True, exist_ok=True)
    specs = [
        ("train_pos0", 1, [[128, 128, 128, 128]], True),
        ("train_pos1", 1, [[256, 192, 96, 96]], False),
        ("train_neg0", 0, [], False),
        ("train_neg1", 0, [], False),
        ("val_pos0", 1, [[160, 256, 128, 96]], False),
        ("val_neg0", 0, [], False),
        ("test_pos0", 1, [[192, 160, 96, 128]], False),
        ("test_neg0", 0, [], False),
    ]
    data = {
        "task": "mixsup",
        "name": "tiny",
        "classes": ["normal", "tumour"],
        "training": [],
        "validation": [],
        "test": [],
    }
    section = {"train": "training", "val": "validation", "test": "test"}
    for i, (name, label, boxes, labelled) in enumerate(specs):
        slide, mask = make_slide(root / f"{name}.tif", boxes, seed=i)
        entry = {"image": slide.name, "label": label}
        if labelled or not name.startswith("train"):
            entry.update({"mask": mask.name, "mask_level": MASK_LEVEL})
        if labelled:
            entry["regions"] = [[96, 96, 192, 192]]
        data[section[name.split("_")[0]]].append(entry)
    path = root / "datalist.json"
    path.write_text(json.dumps(data, indent=2))
    return path
