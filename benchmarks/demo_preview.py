"""Generate the demo cohorts, time them, and write contact sheets (thumbnails + level-0 crops) to look at.

Usage::

    python benchmarks/demo_preview.py --out demo_preview [--tasks lsr mixsup npl] [--seed 0] [--slides N]

For each task this writes ``OUT/<task>/`` (the cohort, reused when already generated with the same
settings) and ``OUT/preview_<task>.png``: per slide a thumbnail next to its mask overlay (green =
class 1 / tumour, other colours = NPL subtypes, grey = "unknown" outside MixSup regions), then one
384 x 384 level-0 crop per class (and, for MixSup, one hard-negative mimic), read back through OpenSlide.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mixsup_monai.demo import make_demo_cohort

_PALETTE = np.array(
    [[0, 0, 0], [40, 200, 60], [255, 200, 0], [0, 160, 255], [255, 60, 200], [255, 110, 0], [130, 0, 255]],
    np.float32,
)
THUMB = 300
CROP = 384


def _mask_path(slide: dict) -> str | None:
    return slide.get("mask") or slide.get("truth_mask")


def _overlay(thumb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = np.asarray(Image.fromarray(mask).resize((thumb.shape[1], thumb.shape[0]), Image.NEAREST))
    out = thumb.astype(np.float32)
    for c in range(1, len(_PALETTE)):
        sel = m == c
        out[sel] = 0.45 * out[sel] + 0.55 * _PALETTE[c]
    out[m == 255] = 0.6 * out[m == 255] + 0.4 * 128
    return out.clip(0, 255).astype(np.uint8)


def _caption(img: Image.Image, text: str) -> Image.Image:
    canvas = Image.new("RGB", (img.width, img.height + 14), "white")
    canvas.paste(img, (0, 14))
    ImageDraw.Draw(canvas).text((2, 1), text, fill="black")
    return canvas


def _grid(tiles: list[Image.Image], cols: int) -> Image.Image:
    w = max(t.width for t in tiles)
    h = max(t.height for t in tiles)
    rows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (cols * (w + 6), rows * (h + 6)), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * (w + 6), (i // cols) * (h + 6)))
    return sheet


def _deep_point(mask: np.ndarray, sel: np.ndarray) -> tuple[int, int] | None:
    from scipy import ndimage as ndi

    if not sel.any():
        return None
    d = ndi.distance_transform_edt(sel)
    y, x = np.unravel_index(int(np.argmax(d)), d.shape)
    return int(y), int(x)


def preview(task: str, out: Path, seed: int, n_slides: int | None, max_slides: int = 12) -> dict:
    """Generate (or reuse) one task's cohort and write its contact sheet; returns timing and sizes."""
    import openslide

    t0 = time.perf_counter()
    datalist = make_demo_cohort(task, out / task, seed=seed, n_slides=n_slides)
    seconds = time.perf_counter() - t0
    data = json.loads(datalist.read_text())
    root = datalist.parent
    slides = [s for split in ("training", "validation", "test") for s in data[split]]
    tiles = []
    picks = (
        slides
        if len(slides) <= max_slides
        else [slides[i] for i in np.linspace(0, len(slides) - 1, max_slides).astype(int)]
    )
    for s in picks:
        with openslide.OpenSlide(str(root / s["image"])) as osr:
            thumb = np.asarray(osr.get_thumbnail((THUMB, THUMB)).convert("RGB"))
        pair = [thumb]
        mp = _mask_path(s)
        if mp:
            pair.append(_overlay(thumb, np.asarray(Image.open(root / mp))))
        img = Image.fromarray(np.concatenate(pair, 1) if len(pair) > 1 else pair[0])
        bits = [Path(s["image"]).stem, f"centre {s['centre']}"]
        if "label" in s:
            bits.append(f"label {s['label']}")
        if "regions" in s:
            bits.append(f"{len(s['regions'])} regions")
        if "proportions" in s:
            bits.append(" ".join(f"{k[:4]}={v:.2f}" for k, v in s["proportions"].items() if v > 0))
        tiles.append(_caption(img, ", ".join(bits)))
    sheet_top = _grid(tiles, 3)
    # one level-0 crop per class (from the first slide where it is deepest)
    crops = []
    wanted = list(enumerate(data["classes"]))
    for c, name in wanted:
        best = None
        for s in slides:
            mp = _mask_path(s)
            if not mp:
                continue
            m = np.asarray(Image.open(root / mp))
            sel = m == c
            f = 2 ** s["mask_level"]
            for mim in s.get("mimics", []):  # show normal tissue, not a mimic, as "normal"
                x, y, w, h = (v // f for v in mim["box"])
                sel[y : y + h, x : x + w] = False
            p = _deep_point(m, sel)
            if p is not None:
                best = (s, p)
                if c > 0 or s["centre"] in ("A", "C"):
                    break
        if best is None:
            continue
        s, (y, x) = best
        f = 2 ** s["mask_level"]
        with openslide.OpenSlide(str(root / s["image"])) as osr:
            W, H = osr.dimensions
            x0 = int(np.clip(x * f - CROP // 2, 0, W - CROP))
            y0 = int(np.clip(y * f - CROP // 2, 0, H - CROP))
            reg = osr.read_region((x0, y0), 0, (CROP, CROP)).convert("RGB")
        crops.append(_caption(reg, f"{name} ({Path(s['image']).stem}, level 0)"))
    if task == "mixsup":
        for s in slides:
            for m in s.get("mimics", []):
                if m["kind"] == "lymphoid aggregate":
                    x, y, w, h = m["box"]
                    with openslide.OpenSlide(str(root / s["image"])) as osr:
                        reg = osr.read_region((x + w // 2 - CROP // 2, y + h // 2 - CROP // 2), 0, (CROP, CROP))
                    crops.append(_caption(reg.convert("RGB"), f"mimic: {m['kind']} (label {s['label']})"))
                    break
            else:
                continue
            break
    sheet_bottom = _grid(crops, min(len(crops), 4))
    sheet = Image.new(
        "RGB", (max(sheet_top.width, sheet_bottom.width), sheet_top.height + sheet_bottom.height + 10), "white"
    )
    sheet.paste(sheet_top, (0, 0))
    sheet.paste(sheet_bottom, (0, sheet_top.height + 10))
    path = out / f"preview_{task}.png"
    sheet.save(path)
    with openslide.OpenSlide(str(root / slides[0]["image"])) as osr:
        dims = osr.level_dimensions
    return {
        "task": task,
        "seconds": round(seconds, 1),
        "slides": len(slides),
        "level_dimensions": dims,
        "preview": str(path),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_preview"))
    parser.add_argument("--tasks", nargs="+", default=["lsr", "mixsup", "npl"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slides", type=int, default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for task in args.tasks:
        print(json.dumps(preview(task, args.out, args.seed, args.slides)))


if __name__ == "__main__":
    main()
