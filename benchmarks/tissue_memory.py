"""Memory and time of tissue detection and patch grids on huge sparse slides (level 0 >= 80k x 80k px).

Usage::

    python benchmarks/tissue_memory.py [--size 81920] [--out DIR]

Writes pyramidal JPEG BigTIFFs without holding any level in memory: tiles are pre-encoded once (glass,
a few tissue textures) and streamed to tifffile as bytes, tissue being a set of discs defined in level-0
coordinates. Three slides:

* ``huge-sparse``: ``--size`` px square, 1 % tissue;
* ``huge-dense``: the same area, ~12 % tissue;
* ``small-sparse``: ``--size / 4`` px square with the same single tissue disc as ``huge-sparse``.

For each, a fresh subprocess opens the slide, runs ``detect_tissue`` and records wall time and peak
RSS (``ru_maxrss``, including the ~0.5 GB of torch/MONAI imports, and the increase over the RSS
after imports); then ``build_patch_grid`` (256 px at level 0, min tissue 0.5) with its tracemalloc
peak. Bars: detection < 1 GB peak RSS and < 5 s; grid memory follows the number of tissue patches
(huge-dense >> huge-sparse ~ small-sparse), not the slide area.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["write_sparse_slide", "main"]

TILE = 256


def _encode_tile(rgb: np.ndarray) -> bytes:
    """JPEG bytes of one tile exactly as tifffile writes them (so the big file has consistent tags)."""
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(
        buf, rgb, tile=(TILE, TILE), photometric="rgb", compression="jpeg", compressionargs={"level": 90}, metadata=None
    )
    buf.seek(0)
    with tifffile.TiffFile(buf) as tif:
        page = tif.pages[0]
        if page.jpegtables is not None:
            raise RuntimeError("tifffile wrote abbreviated JPEG tiles; this writer expects self-contained ones")
        tif.filehandle.seek(page.dataoffsets[0])
        return tif.filehandle.read(page.databytecounts[0])


def _textures(seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(glass tile, tissue tile variants)`` as RGB arrays: pink stroma with purple nuclei-like dots."""
    rng = np.random.default_rng(seed)
    glass = np.full((TILE, TILE, 3), (238, 236, 240), np.uint8)
    tissue = []
    yy, xx = np.mgrid[0:TILE, 0:TILE]
    for _ in range(4):
        wave = 10 * np.sin(xx[..., None] / rng.uniform(6, 14) + rng.uniform(0, 6))
        rgb = np.array((224, 142, 190), np.float32) + wave + rng.normal(0, 4, (TILE, TILE, 3))
        for cy, cx in rng.integers(0, TILE, (60, 2)):
            rgb[(yy - cy) ** 2 + (xx - cx) ** 2 < 16] = (100, 55, 145)
        tissue.append(np.clip(rgb, 0, 255).astype(np.uint8))
    return glass, tissue


def write_sparse_slide(path: str | Path, size: int, discs: list[tuple[float, float, float]], mpp: float = 0.25) -> dict:
    """Write a ``size`` x ``size`` pyramidal JPEG BigTIFF whose tissue is ``discs`` ``(cx, cy, r)`` in level-0 px.

    Levels halve down to a long side <= 1280 px. Tiles fully inside a disc or fully on glass are
    pre-encoded bytes, only tiles on a disc border are rendered and encoded: memory stays at a few MB
    whatever ``size`` is.

    Returns:
        ``{"levels": [(w, h), ...], "tissue_fraction": float, "bytes": file size, "seconds": write time}``.
    """
    import tifffile

    start = time.perf_counter()
    glass, textures = _textures()
    glass_bytes, texture_bytes = _encode_tile(glass), [_encode_tile(t) for t in textures]
    discs_a = np.asarray(discs, np.float64).reshape(-1, 3)
    levels = []
    side = size
    while True:
        levels.append(side)
        if side <= 1280:
            break
        side = math.ceil(side / 2)

    def tiles(level: int):
        """Tiles in row-major order: pre-encoded glass / tissue, rendered and encoded only on disc borders."""
        ds = size / levels[level]
        n = math.ceil(levels[level] / TILE)
        span = TILE * ds  # level-0 px per tile
        cx, cy, r = discs_a[:, 0], discs_a[:, 1], discs_a[:, 2]
        for ty in range(n):
            y0, y1 = ty * span, (ty + 1) * span
            for tx in range(n):
                x0, x1 = tx * span, (tx + 1) * span
                near = np.hypot(np.clip(cx, x0, x1) - cx, np.clip(cy, y0, y1) - cy) < r
                far = np.hypot(np.maximum(abs(cx - x0), abs(cx - x1)), np.maximum(abs(cy - y0), abs(cy - y1))) < r
                variant = (tx + ty) % len(textures)
                if far.any():
                    yield texture_bytes[variant]
                elif not near.any():
                    yield glass_bytes
                else:
                    px = x0 + (np.arange(TILE) + 0.5) * ds
                    py = y0 + (np.arange(TILE) + 0.5) * ds
                    inside = np.zeros((TILE, TILE), bool)
                    for k in np.flatnonzero(near):
                        inside |= (px[None, :] - cx[k]) ** 2 + (py[:, None] - cy[k]) ** 2 < r[k] ** 2
                    yield _encode_tile(np.where(inside[..., None], textures[variant], glass))

    from tqdm import tqdm

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level, side in enumerate(tqdm(levels, desc=f"writing {Path(path).name}", unit="level", leave=False)):
            px_per_cm = 1e4 / (mpp * size / side)
            tif.write(
                tiles(level),
                shape=(side, side, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1,
                metadata=None,
            )
    fraction = float(np.sum(np.pi * discs_a[:, 2] ** 2)) / size**2
    return {
        "levels": [(s, s) for s in levels],
        "tissue_fraction": fraction,
        "bytes": Path(path).stat().st_size,
        "seconds": time.perf_counter() - start,
    }


_CHILD = r"""
import json, resource, sys, time, tracemalloc
t0 = time.perf_counter()
from mixsup_monai.wsi import build_patch_grid, detect_tissue, open_slide
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
base = rss_mb()
t1 = time.perf_counter()
slide = open_slide(sys.argv[1])
t2 = time.perf_counter()
tissue = detect_tissue(slide)
t3 = time.perf_counter()
peak_detect = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
tracemalloc.start()
grid = build_patch_grid(slide, tissue, patch_size=256, min_tissue_fraction=0.5)
grid_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
t4 = time.perf_counter()
print(json.dumps({
    "backend": slide.info.backend, "level0": slide.info.level_dimensions[0], "levels": slide.info.level_count,
    "mask_level": tissue.level, "mask_shape": list(tissue.shape), "tissue_fraction": tissue.fraction,
    "import_s": t1 - t0, "open_s": t2 - t1, "detect_s": t3 - t2, "grid_s": t4 - t3,
    "rss_after_imports_mb": base, "peak_rss_detect_mb": peak_detect,
    "patches": len(grid), "grid_peak_mb": grid_peak / 2**20,
    "grid_bytes": int(grid.x.nbytes + grid.y.nbytes + grid.tissue_fraction.nbytes),
}))
"""


def main(argv: list[str] | None = None) -> list[dict]:
    """Write the slides, measure each in a subprocess, print a table; returns the measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=81920, help="level-0 side of the huge slides (px)")
    parser.add_argument("--out", type=str, default=None, help="folder for the slides (default: a temporary one)")
    args = parser.parse_args(argv)
    size = args.size
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="tissue_memory_")
        out = Path(tmp.name)
    else:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)

    one_disc = [(0.3 * size, 0.4 * size, 0.0564 * size)]  # 1 % of the huge slide
    rng = np.random.default_rng(0)
    many = [(cx, cy, 0.07 * size) for cx, cy in rng.uniform(0.1 * size, 0.9 * size, (8, 2))]
    small_size = size // 4
    cases = [
        ("huge-sparse", size, one_disc),
        ("huge-dense", size, many),
        ("small-sparse", small_size, [(0.5 * small_size, 0.5 * small_size, one_disc[0][2])]),
    ]
    rows = []
    for name, side, discs in cases:
        path = out / f"{name}.tif"
        written = write_sparse_slide(path, side, discs)
        print(
            f"wrote {name}: {side} x {side} px, {len(written['levels'])} levels, {written['bytes'] / 2**20:.0f} MB "
            f"in {written['seconds']:.1f} s",
            flush=True,
        )
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, check=False, timeout=600
        )
        if proc.returncode != 0:
            raise RuntimeError(f"measurement of {name} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result.update(name=name, side=side, slide_mb=written["bytes"] / 2**20)
        rows.append(result)
        path.unlink()

    print()
    header = (
        f"{'slide':<13} {'level 0':>15} {'mask (level)':>17} {'tissue':>7} {'open s':>7} {'detect s':>9} "
        f"{'RSS imports':>12} {'peak RSS':>9} {'patches':>8} {'grid KB':>8} {'grid peak':>10} {'grid s':>7}"
    )
    print(header)
    for r in rows:
        mask = f"{r['mask_shape'][1]}x{r['mask_shape'][0]} ({r['mask_level']})"
        print(
            f"{r['name']:<13} {r['side']:>7} x {r['side']:<7}{mask:>15} {r['tissue_fraction']:>7.1%} "
            f"{r['open_s']:>7.2f} {r['detect_s']:>9.2f} {r['rss_after_imports_mb']:>9.0f} MB "
            f"{r['peak_rss_detect_mb']:>6.0f} MB "
            f"{r['patches']:>8} {r['grid_bytes'] / 1024:>8.0f} {r['grid_peak_mb']:>7.1f} MB {r['grid_s']:>7.2f}"
        )
    huge = [r for r in rows if r["side"] == size]
    ok_detect = all(r["peak_rss_detect_mb"] < 1024 and r["open_s"] + r["detect_s"] < 5 for r in huge)
    print(f"\ndetection on {size} x {size}: peak RSS < 1 GB and open + detect < 5 s: {'PASS' if ok_detect else 'FAIL'}")
    sparse, dense, small = rows
    print(
        f"grid peak memory: huge-sparse {sparse['grid_peak_mb']:.1f} MB ({sparse['patches']} patches), "
        f"small-sparse {small['grid_peak_mb']:.1f} MB ({small['patches']} patches, 1/16 of the area), "
        f"huge-dense {dense['grid_peak_mb']:.1f} MB ({dense['patches']} patches)"
    )
    if tmp is not None:
        tmp.cleanup()
    return rows


if __name__ == "__main__":
    main()
