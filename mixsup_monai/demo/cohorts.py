"""Deterministic demo cohorts (MixSup, LSR, NPL) of pyramidal TIFF slides with known pixel truth."""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from monai.utils import StrEnum, look_up_option
from scipy import ndimage as ndi

from mixsup_monai.demo.textures import CENTRES, Tex, jitter_stain, render_slide, smooth_noise

__all__ = [
    "DemoTask",
    "DEMO_VERSION",
    "MPP",
    "MASK_LEVEL",
    "TASK_CLASSES",
    "DEFAULT_GROUPS",
    "LSR_BLOCK_SIZE",
    "LSR_Z_BINS",
    "LSR_Z_NOISE",
    "LSR_TABLE_BLOCKS",
    "make_demo_cohort",
    "group_sizes",
    "lsr_z",
    "mask_estimated_table",
]

logger = logging.getLogger(__name__)

#: Version of the generator; bump whenever the output for a given seed changes.
DEMO_VERSION = "1.2"
#: Microns per pixel at level 0 (a "10x" caricature: nuclei ~6-14 px across).
MPP = 1.0
#: Pyramid level of every mask PNG (down-sample 4).
MASK_LEVEL = 2
_DOWN = 2**MASK_LEVEL
#: LSR: edge (level-0 px) of the low-resolution label blocks, and the minimum tissue fraction kept.
LSR_BLOCK_SIZE = 256
LSR_MIN_TISSUE = 0.5
#: LSR: number of low-resolution bins z (width ``1 / LSR_Z_BINS`` of the noisy tumour fraction).
LSR_Z_BINS = 5
#: LSR: std of the Gaussian noise added to a block's true tumour fraction before binning.
LSR_Z_NOISE = 0.1
#: LSR: training blocks per z drawn for the "mask estimation" of the p(c|z) table.
LSR_TABLE_BLOCKS = 12


class DemoTask(StrEnum):
    """Tasks of :func:`make_demo_cohort`."""

    MIXSUP = "mixsup"
    LSR = "lsr"
    NPL = "npl"


def _task(task: str) -> str:
    """Validate a task name with MONAI's ``look_up_option``."""
    return look_up_option(str(task), DemoTask).value


#: Pixel classes of each task (index = mask value; 255 = glass / unknown).
TASK_CLASSES: dict[str, list[str]] = {
    "mixsup": ["normal", "tumour"],
    "lsr": ["non-tumour", "tumour"],
    "npl": ["non-cancer", "lepidic", "acinar", "papillary", "micropapillary", "solid"],
}

#: Slide groups of each task: ``(group, split, default count, minimum count)``.
DEFAULT_GROUPS: dict[str, list[tuple[str, str, int, int]]] = {
    "lsr": [("train", "training", 12, 1), ("val", "validation", 3, 1), ("test", "test", 6, 1)],
    "mixsup": [
        ("image", "training", 16, 2),
        ("pixel", "training", 3, 1),
        ("val", "validation", 4, 2),
        ("test", "test", 12, 2),
    ],
    "npl": [
        ("supervised", "training", 3, 1),
        ("weak", "training", 14, 1),
        ("val", "validation", 2, 1),
        ("test", "test", 6, 1),
    ],
}

#: Level-0 slide sizes (height choices, width choices), multiples of 256.
_SLIDE_SIZES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "lsr": ((2048, 2304), (2560, 2816)),
    "mixsup": ((1536, 1792), (2048, 2304)),
    "npl": ((1792, 2048), (2048, 2304)),
}

_TUMOUR_TEX = {"lsr": (Tex.CARCINOMA,), "mixsup": (Tex.CARCINOMA, Tex.ADENOCARCINOMA)}
_NPL_TEX = (Tex.LEPIDIC, Tex.ACINAR, Tex.PAPILLARY, Tex.MICROPAPILLARY, Tex.SOLID)
#: Relative prevalence of NPL subtypes when choosing a slide's subtypes (acinar most common).
_NPL_PREVALENCE = np.array([0.2, 0.3, 0.15, 0.15, 0.2])
_MIMIC_TEX = (Tex.LYMPHOID, Tex.INFLAMED)
#: Tumour / mimic fragments smaller than this (mask-level px, i.e. 400 µm²) are not drawn.
_MIN_REGION_PX = 25


# ---------------------------------------------------------------------------------------------
# cohort plan


def group_sizes(task: str, n_slides: int | None = None) -> dict[str, int]:
    """Number of slides per group for a total of ``n_slides`` (default: the task's default size).

    Counts are the defaults scaled proportionally, each at least its group minimum, and adjusted
    (largest groups first) so that they sum to ``n_slides``.

    Raises:
        ValueError: when ``n_slides`` is smaller than the sum of the group minimums.
    """
    task = _task(task)
    groups = DEFAULT_GROUPS[task]
    total = sum(g[2] for g in groups)
    if n_slides is None:
        return {g[0]: g[2] for g in groups}
    minimum = sum(g[3] for g in groups)
    if int(n_slides) < minimum:
        raise ValueError(
            f"make_demo_cohort({task!r}): n_slides={n_slides} is too small, this task needs at least "
            f"{minimum} slides (groups {[(g[0], g[3]) for g in groups]})."
        )
    n = int(n_slides)
    counts = {g[0]: max(g[3], int(round(g[2] * n / total))) for g in groups}
    mins = {g[0]: g[3] for g in groups}
    order = sorted(counts, key=lambda k: (-counts[k], k))
    i = 0
    while sum(counts.values()) != n:
        k = order[i % len(order)]
        if sum(counts.values()) > n and counts[k] > mins[k]:
            counts[k] -= 1
        elif sum(counts.values()) < n:
            counts[k] += 1
        i += 1
    return counts


def _plan(task: str, seed: int, n_slides: int | None) -> list[dict[str, Any]]:
    """The cohort's slide jobs: index, name, group, split, and balanced labels for MixSup."""
    counts = group_sizes(task, n_slides)
    jobs: list[dict[str, Any]] = []
    index = 0
    for gi, (group, split, _, _) in enumerate(DEFAULT_GROUPS[task]):
        n = counts[group]
        labels: list[int | None] = [None] * n
        if task == "mixsup":
            if group == "pixel":
                labels = [1] * n
            else:
                lab = np.arange(n) % 2
                labels = [int(v) for v in np.random.default_rng([seed, 1_000_000 + gi]).permutation(lab)]
        for k in range(n):
            jobs.append(
                {
                    "task": task,
                    "seed": int(seed),
                    "index": index,
                    "name": f"{task}_{group}_{k:03d}",
                    "group": group,
                    "split": split,
                    "label": labels[k],
                }
            )
            index += 1
    return jobs


# ---------------------------------------------------------------------------------------------
# layout helpers (all at the mask level, i.e. level 2)


def _blob(
    rng: np.random.Generator,
    shape: tuple[int, int],
    centre: tuple[float, float],
    radii: tuple[float, float],
    angle: float = 0.0,
    irregular: float = 0.2,
    rough: float = 0.08,
) -> np.ndarray:
    """An irregular blob: a rotated ellipse with a Fourier-perturbed outline and a rough edge."""
    cy, cx = centre
    ry, rx = max(radii[0], 1.0), max(radii[1], 1.0)
    ext = 1.9 * max(ry, rx) + 4
    y0, y1 = int(max(0, cy - ext)), int(min(shape[0], cy + ext + 1))
    x0, x1 = int(max(0, cx - ext)), int(min(shape[1], cx + ext + 1))
    out = np.zeros(shape, bool)
    if y1 <= y0 or x1 <= x0:
        return out
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = xx * c + yy * s, -xx * s + yy * c
    rho = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    th = np.arctan2(v / ry, u / rx)
    bound = np.ones_like(rho)
    for k in range(2, 7):
        bound += rng.normal(0, irregular / k) * np.cos(k * th + rng.uniform(0, 2 * np.pi))
    sc = max(2.0, min(ry, rx) / 4)
    bound += rough * smooth_noise(rng, rho.shape, sc) + 0.4 * rough * smooth_noise(rng, rho.shape, max(1.5, sc / 4))
    out[y0:y1, x0:x1] = rho < bound
    return out


def _remove_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[lab]


def _tissue(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """1-3 tissue pieces with irregular outlines and small tears, away from the slide border."""
    h, w = shape
    n = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    along = 1 if w >= h else 0
    L, S = (w, h) if along else (h, w)
    tissue = np.zeros(shape, bool)
    for i in range(n):
        slot = L / n
        cl = slot * (i + 0.5) + rng.uniform(-0.05, 0.05) * slot
        cs = S / 2 + rng.uniform(-0.08, 0.08) * S
        rl = slot / 2 * rng.uniform(0.72, 0.9)
        rs = S / 2 * rng.uniform(0.62, 0.85)
        centre = (cs, cl) if along else (cl, cs)
        radii = (rs, rl) if along else (rl, rs)
        tissue |= _blob(rng, shape, centre, radii, rng.uniform(-0.15, 0.15), irregular=0.22, rough=0.05)
    tears = smooth_noise(rng, shape, 6) + 0.5 * smooth_noise(rng, shape, 2)
    tissue &= tears < 3.1
    m = 8
    tissue[:m] = tissue[-m:] = False
    tissue[:, :m] = tissue[:, -m:] = False
    return _remove_small(tissue, 400)


def _place(
    rng: np.random.Generator, allowed: np.ndarray, radius: float, depth: np.ndarray | None = None
) -> tuple[float, float] | None:
    """A random centre inside ``allowed`` at least ~``radius / 2`` from its edge (when possible)."""
    if depth is None:
        depth = ndi.distance_transform_edt(allowed)
    need = min(0.5 * radius, 0.7 * float(depth.max()))
    idx = np.flatnonzero((depth >= need) & allowed)
    if idx.size == 0:
        return None
    y, x = divmod(int(idx[rng.integers(idx.size)]), allowed.shape[1])
    return float(y), float(x)


def _land(
    rng: np.random.Generator,
    tissue: np.ndarray,
    depth: np.ndarray,
    radius: float,
    make: Callable[[tuple[float, float]], np.ndarray],
    spread: float = 1.0,
    tries: int = 20,
) -> np.ndarray:
    """Place a region made by ``make(centre)`` so that >= 60 % of its disc lies on tissue.

    Returns the region clipped to tissue: the first good try, else the try with most tissue (a
    region is never silently lost, so slide labels always agree with the truth).
    """
    best = np.zeros(tissue.shape, bool)
    for _ in range(tries):
        c = _place(rng, tissue, spread * radius, depth)
        if c is None:
            break
        m = _remove_small(make(c) & tissue, _MIN_REGION_PX)
        if m.sum() > 0.6 * np.pi * radius * radius:
            return m
        if m.sum() > best.sum():
            best = m
    return best


def _components(mask: np.ndarray, min_px: int = 1) -> list[dict[str, Any]]:
    """Connected components of a level-2 mask as level-0 boxes and areas (µm²)."""
    lab, n = ndi.label(mask)
    out = []
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        area = int((lab[sl] == i).sum())
        if area < min_px:
            continue
        y0, x0 = sl[0].start * _DOWN, sl[1].start * _DOWN
        box = [x0, y0, (sl[1].stop - sl[1].start) * _DOWN, (sl[0].stop - sl[0].start) * _DOWN]
        out.append({"box": box, "area_um2": float(area * (_DOWN * MPP) ** 2)})
    out.sort(key=lambda c: -c["area_um2"])
    return out


def _um(r_um: float) -> float:
    """Level-0 microns to mask-level pixels."""
    return r_um / MPP / _DOWN


# ---------------------------------------------------------------------------------------------
# task layouts: (rng, shape at mask level, job) -> (texture map, centre)


def _layout_lsr(rng: np.random.Generator, shape: tuple[int, int], job: dict) -> tuple[np.ndarray, str]:
    centre = str(rng.choice(["A", "B", "E"]))
    tissue = _tissue(rng, shape)
    tex = np.full(shape, Tex.GLASS, np.uint8)
    tex[tissue] = Tex.STROMA
    depth = ndi.distance_transform_edt(tissue)
    for t, n_rng, r_rng in (
        (Tex.ADIPOSE, (1, 4), (120, 400)),
        (Tex.DUCTS, (1, 4), (80, 220)),
        (Tex.INFLAMED, (0, 2), (80, 200)),
    ):
        for _ in range(rng.integers(*n_rng)):
            r = _um(rng.uniform(*r_rng))
            c = _place(rng, tissue, r, depth)
            if c is not None:
                tex[_blob(rng, shape, c, (r, r * rng.uniform(0.6, 1.4)), rng.uniform(0, np.pi), 0.3, 0.12) & tissue] = t
    # tumours of many sizes with very irregular edges and satellite nests
    n_tum = int(rng.choice([0, 1, 2, 3, 4, 5, 6], p=[0.05, 0.1, 0.15, 0.2, 0.2, 0.15, 0.15]))
    for _ in range(n_tum):
        r = _um(float(np.exp(rng.uniform(np.log(60), np.log(700)))))
        c = _place(rng, tissue, r, depth)
        if c is None:
            continue
        m = _blob(rng, shape, c, (r, r * rng.uniform(0.5, 1.5)), rng.uniform(0, np.pi), 0.4, 0.2)
        for _ in range(rng.integers(0, 5)):
            a, d = rng.uniform(0, 2 * np.pi), r * rng.uniform(0.9, 1.6)
            rs = r * rng.uniform(0.12, 0.4)
            m |= _blob(rng, shape, (c[0] + d * np.sin(a), c[1] + d * np.cos(a)), (rs, rs), 0.0, 0.3, 0.15)
        tex[_remove_small(m & tissue, _MIN_REGION_PX)] = Tex.CARCINOMA
    return tex, centre


def _layout_mixsup(rng: np.random.Generator, shape: tuple[int, int], job: dict) -> tuple[np.ndarray, str]:
    pixel = job["group"] == "pixel"
    centre = "C" if pixel else str(rng.choice(["A", "B"]))
    positive = bool(job["label"])
    tissue = _tissue(rng, shape)
    tex = np.full(shape, Tex.GLASS, np.uint8)
    tex[tissue] = Tex.STROMA
    depth = ndi.distance_transform_edt(tissue)
    for _ in range(rng.integers(2, 5)):  # benign mucosa covering much of the tissue
        r = _um(rng.uniform(250, 600))
        c = _place(rng, tissue, r, depth)
        if c is not None:
            tex[_blob(rng, shape, c, (r, r * rng.uniform(0.6, 1.5)), rng.uniform(0, np.pi), 0.25, 0.1) & tissue] = (
                Tex.MUCOSA
            )
    if rng.random() < 0.3:
        r = _um(rng.uniform(100, 250))
        c = _place(rng, tissue, r, depth)
        if c is not None:
            tex[_blob(rng, shape, c, (r, r), 0.0, 0.3, 0.12) & tissue] = Tex.ADIPOSE
    # hard-negative mimics: lymphoid aggregates (round, dark, crowded) and inflamed patches
    if positive:
        n_mimic = int(rng.choice([0, 1, 2], p=[0.3, 0.45, 0.25])) if not pixel else int(rng.integers(1, 3))
    else:
        n_mimic = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    for _ in range(n_mimic):
        if rng.random() < 0.6:
            kind, r_um, irr, rough, ratio = Tex.LYMPHOID, rng.uniform(80, 260), 0.08, 0.04, (0.8, 1.25)
        else:
            kind, r_um, irr, rough, ratio = Tex.INFLAMED, rng.uniform(150, 400), 0.3, 0.15, (0.6, 1.5)
        r = _um(r_um)
        m = _land(
            rng,
            tissue,
            depth,
            r,
            lambda c, r=r, irr=irr, rough=rough, ratio=ratio: _blob(
                rng, shape, c, (r, r * rng.uniform(*ratio)), rng.uniform(0, np.pi), irr, rough
            ),
        )
        tex[m] = kind
    if positive:
        tiny_only = (not pixel) and rng.random() < 0.35
        radii_um = (
            [rng.uniform(60, 150) for _ in range(rng.integers(1, 3))]
            if tiny_only
            else [rng.uniform(200, 550)] + [rng.uniform(60, 150) for _ in range(rng.integers(0, 3))]
        )
        for r_um in radii_um:
            r = _um(r_um)
            t = Tex.CARCINOMA if rng.random() < 0.3 else Tex.ADENOCARCINOMA
            m = _land(
                rng,
                tissue,
                depth,
                r,
                lambda c, r=r: _blob(rng, shape, c, (r, r * rng.uniform(0.6, 1.5)), rng.uniform(0, np.pi), 0.3, 0.15),
                spread=2.0,
            )
            tex[m] = t
        if not np.isin(tex, _TUMOUR_TEX["mixsup"]).any():  # a positive slide always has a tumour
            tex[tissue & (depth >= 0.8 * depth.max())] = Tex.ADENOCARCINOMA
    return tex, centre


def _layout_npl(rng: np.random.Generator, shape: tuple[int, int], job: dict) -> tuple[np.ndarray, str]:
    centre = "C" if job["group"] == "supervised" else "D"
    tissue = _tissue(rng, shape)
    tex = np.full(shape, Tex.GLASS, np.uint8)
    tex[tissue] = Tex.ALVEOLAR
    depth = ndi.distance_transform_edt(tissue)
    for _ in range(rng.integers(1, 4)):  # bronchovascular bundles
        r = _um(rng.uniform(60, 160))
        c = _place(rng, tissue, r, depth)
        if c is not None:
            tex[_blob(rng, shape, c, (r, r * rng.uniform(0.5, 2.0)), rng.uniform(0, np.pi), 0.3, 0.1) & tissue] = (
                Tex.STROMA
            )
    # tumour: one large irregular region (+ an occasional second), partitioned into 1-3 subtypes
    tum = np.zeros(shape, bool)
    ext = float(np.sqrt(tissue.sum() / np.pi))
    for i in range(1 if rng.random() < 0.7 else 2):
        r = ext * (rng.uniform(0.45, 0.7) if i == 0 else rng.uniform(0.2, 0.35))
        tum |= _land(
            rng,
            tissue,
            depth,
            r,
            lambda c, r=r: _blob(rng, shape, c, (r, r * rng.uniform(0.7, 1.4)), rng.uniform(0, np.pi), 0.3, 0.12),
            spread=0.5,
        )
    if tum.sum() < 0.05 * tissue.sum():  # never a slide without a usable tumour: take the tissue's core
        tum |= tissue & (depth >= 0.6 * depth.max())
    k = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    subtypes = rng.choice(len(_NPL_TEX), size=k, replace=False, p=_NPL_PREVALENCE)
    n_seeds = k + int(rng.integers(0, k + 1))
    assign = np.concatenate([subtypes, rng.choice(subtypes, n_seeds - k)])
    idx = np.flatnonzero(tum)
    if idx.size:
        seeds = np.stack(divmod(idx[rng.choice(idx.size, n_seeds, replace=False)], shape[1]), 1)
        warp = float(np.sqrt(idx.size)) * 0.12
        yy = np.arange(shape[0], dtype=np.float32)[:, None] + warp * smooth_noise(rng, shape, max(4, warp))
        xx = np.arange(shape[1], dtype=np.float32)[None, :] + warp * smooth_noise(rng, shape, max(4, warp))
        d = np.stack([(yy - sy) ** 2 + (xx - sx) ** 2 for sy, sx in seeds])
        sub = assign[np.argmin(d, 0)]
        for j, t in enumerate(_NPL_TEX):
            tex[tum & (sub == j)] = t
    return tex, centre


_LAYOUTS: dict[str, Callable] = {"lsr": _layout_lsr, "mixsup": _layout_mixsup, "npl": _layout_npl}


def _class_map(task: str, tex: np.ndarray) -> np.ndarray:
    """Texture map -> the task's label map (255 = glass)."""
    lut = np.zeros(256, np.uint8)
    lut[Tex.GLASS] = 255
    if task == "npl":
        for j, t in enumerate(_NPL_TEX, start=1):
            lut[t] = j
    else:
        for t in _TUMOUR_TEX[task]:
            lut[t] = 1
    return lut[tex]


# ---------------------------------------------------------------------------------------------
# LSR labels


def lsr_z(fraction: np.ndarray, rng: np.random.Generator, n_bins: int = LSR_Z_BINS, noise: float = LSR_Z_NOISE):
    """Low-resolution label of blocks, like a low-resolution classifier's binned output.

    ``z = clip(floor((fraction + N(0, noise)) * n_bins), 0, n_bins - 1)``.

    Args:
        fraction: true tumour fraction of each block, in [0, 1].
        rng: random generator.
        n_bins: number of bins (width ``1 / n_bins``).
        noise: std of the Gaussian noise added before binning.
    """
    f = np.asarray(fraction, np.float64) + rng.normal(0.0, noise, np.shape(fraction))
    return np.clip(np.floor(f * n_bins), 0, n_bins - 1).astype(int)


def _blocks(cls: np.ndarray, rng: np.random.Generator, n_bins: int, noise: float) -> list[dict[str, Any]]:
    """Regular grid of LSR blocks over tissue with their true tumour fraction and noisy binned z."""
    b = LSR_BLOCK_SIZE // _DOWN
    gh, gw = cls.shape[0] // b, cls.shape[1] // b
    tiles = cls[: gh * b, : gw * b].reshape(gh, b, gw, b).transpose(0, 2, 1, 3).reshape(gh, gw, b * b)
    tissue = (tiles != 255).mean(-1)
    tumour = (tiles == 1).sum(-1) / np.maximum((tiles != 255).sum(-1), 1)
    gy, gx = np.nonzero(tissue >= LSR_MIN_TISSUE)
    z = lsr_z(tumour[gy, gx], rng, n_bins, noise)
    return [
        {
            "location": [int(x * LSR_BLOCK_SIZE), int(y * LSR_BLOCK_SIZE)],
            "size": [LSR_BLOCK_SIZE, LSR_BLOCK_SIZE],
            "z": int(zz),
            "tumour_fraction": round(float(tumour[y, x]), 6),
            "tissue_fraction": round(float(tissue[y, x]), 6),
        }
        for y, x, zz in zip(gy, gx, z)
    ]


def mask_estimated_table(
    blocks: list[dict[str, Any]],
    rng: np.random.Generator,
    source: str,
    n_bins: int = LSR_Z_BINS,
    per_z: int = LSR_TABLE_BLOCKS,
):
    """ "Mask estimation" of the LSR table p(c|z) = N(eta, rho^2) from a few blocks per z.

    For each z, ``per_z`` blocks (fewer if not available) are drawn at random; their true class
    fractions go to :func:`~mixsup_monai.methods.lsr.label_stats_from_fractions` (mean and sample
    std per z). z values without any block are left out.
    """
    from mixsup_monai.methods.lsr.label_stats import label_stats_from_fractions

    z = np.asarray([bl["z"] for bl in blocks], int)
    f = np.asarray([bl["tumour_fraction"] for bl in blocks], float)
    fractions = {}
    for zz in range(n_bins):
        idx = np.flatnonzero(z == zz)
        if idx.size:
            pick = np.sort(rng.choice(idx, min(per_z, idx.size), replace=False))
            fractions[zz] = list(np.stack([1 - f[pick], f[pick]], 1))
    return label_stats_from_fractions(fractions, TASK_CLASSES["lsr"], source, ddof=1)


# ---------------------------------------------------------------------------------------------
# one slide


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(path, optimize=False, compress_level=6)


def _make_slide(job: dict[str, Any]) -> dict[str, Any]:
    """Render, write and describe one slide (runs in a worker; everything from ``job``)."""
    from mixsup_monai.wsi.pyramid import write_pyramidal_tiff

    task, out = job["task"], Path(job["out_dir"])
    rng = np.random.default_rng([job["seed"], job["index"]])
    hs, ws = _SLIDE_SIZES[task]
    shape0 = (int(rng.choice(hs)), int(rng.choice(ws)))
    shape = (shape0[0] // _DOWN, shape0[1] // _DOWN)
    tex, centre = _LAYOUTS[task](rng, shape, job)
    stain = jitter_stain(CENTRES[centre], rng)
    rgb, info = render_slide(tex, shape0, stain, rng)
    name = job["name"]
    write_pyramidal_tiff(out / "slides" / f"{name}.tiff", rgb, mpp=MPP)
    cls = _class_map(task, tex)
    slide: dict[str, Any] = {"image": f"slides/{name}.tiff", "centre": centre, "group": job["group"]}
    tissue_px = int((cls != 255).sum())
    slide["size"] = [shape0[1], shape0[0]]
    slide["tissue_fraction"] = round(tissue_px / cls.size, 6)
    slide["artefacts"] = {"pen": info["pen"], "scratch": info["scratch"]}
    mask_rel = f"masks/{name}.png"

    if task == "lsr":
        slide["mask"], slide["mask_level"] = mask_rel, MASK_LEVEL
        _save_png(out / mask_rel, cls)
        slide["tumour_fraction"] = round(float((cls == 1).sum()) / max(tissue_px, 1), 6)
        slide["blocks"] = _blocks(cls, rng, job["options"]["z_bins"], job["options"]["z_noise"])
    elif task == "mixsup":
        slide["label"] = int(job["label"])
        tumours = _components(cls == 1)
        mimics = []
        for t in _MIMIC_TEX:
            for c in _components(tex == t, min_px=16):
                mimics.append({"kind": "lymphoid aggregate" if t == Tex.LYMPHOID else "inflamed stroma", **c})
        slide["tumours"], slide["mimics"] = tumours, mimics
        slide["mask_level"] = MASK_LEVEL
        if job["group"] == "pixel":
            regions = _pixel_regions(rng, tex, cls)
            valid = np.zeros(cls.shape, bool)
            for x, y, w, h in regions:
                valid[y // _DOWN : (y + h) // _DOWN, x // _DOWN : (x + w) // _DOWN] = True
            slide["mask"], slide["regions"] = mask_rel, regions
            _save_png(out / mask_rel, np.where(valid, cls, 255))
        elif job["split"] != "training":
            slide["mask"] = mask_rel
            _save_png(out / mask_rel, cls)
        if job["split"] == "training":  # full truth of training slides, for analysis only (never training)
            slide["truth_mask"] = f"masks/{name}_truth.png"
            _save_png(out / slide["truth_mask"], cls)
    else:  # npl
        tumour_px = np.bincount(cls[(cls != 255) & (cls > 0)], minlength=6)[1:]
        names = TASK_CLASSES["npl"][1:]
        props = tumour_px / max(int(tumour_px.sum()), 1)
        slide["subtypes"] = [n for n, p in zip(names, props) if p > 0]
        proportions = {n: round(float(p), 6) for n, p in zip(names, props)}
        slide["tumour_area_fraction"] = round(float(tumour_px.sum()) / max(tissue_px, 1), 6)
        if job["group"] == "weak":
            tm = np.where(cls == 255, 255, (cls > 0).astype(np.uint8)).astype(np.uint8)
            slide["proportions"] = proportions
            slide["tumour_mask"], slide["truth_mask"] = f"masks/{name}_tumour.png", f"masks/{name}_truth.png"
            slide["mask_level"] = MASK_LEVEL
            _save_png(out / slide["tumour_mask"], tm)
            _save_png(out / slide["truth_mask"], cls)
        else:
            slide["mask"], slide["mask_level"] = mask_rel, MASK_LEVEL
            _save_png(out / mask_rel, cls)
            if job["split"] != "training":
                slide["proportions"] = proportions
    return slide


def _pixel_regions(rng: np.random.Generator, tex: np.ndarray, cls: np.ndarray, size: int = 512) -> list[list[int]]:
    """2-4 level-0 boxes (``size`` px) of a pixel-labelled slide: on tumour, a mimic, normal tissue (+1)."""
    b = size // _DOWN
    H, W = cls.shape
    targets = [cls == 1, np.isin(tex, _MIMIC_TEX)]
    normal = (cls == 0) & ~np.isin(tex, _MIMIC_TEX)
    far = ndi.distance_transform_edt(~((cls == 1) | np.isin(tex, _MIMIC_TEX))) > b * 0.75
    targets.append(normal & far if (normal & far).any() else normal)
    if rng.random() < 0.5:
        targets.append(cls != 255)
    boxes = []
    for t in targets:
        idx = np.flatnonzero(t)
        if idx.size == 0:
            continue
        y, x = divmod(int(idx[rng.integers(idx.size)]), W)
        y0 = int(np.clip(y - b // 2, 0, H - b))
        x0 = int(np.clip(x - b // 2, 0, W - b))
        boxes.append([x0 * _DOWN, y0 * _DOWN, size, size])
    return boxes


# ---------------------------------------------------------------------------------------------
# cohort


_DESCRIPTIONS = {
    "lsr": (
        "LSR demo: breast-like slides (stroma, fat, benign ducts, inflamed patches, invasive carcinoma of "
        "many sizes). Each 256 px level-0 block over tissue carries a low-resolution label z = a noisy "
        "(N(0, z_noise)), binned (z_bins bins) function of its true tumour fraction; label_stats.json is the "
        "p(c|z) table estimated from ~12 training blocks per z. Every slide carries its pixel mask."
    ),
    "mixsup": (
        "MixSup demo: gastric-like slides from main centres A/B with slide labels only (balanced), some "
        "tumours tiny (120-300 um), hard-negative mimics (lymphoid aggregates, inflamed stroma) in negative "
        "and positive slides; a few pixel-labelled slides from a distinct centre C with 'regions' where "
        "the mask is valid (255 elsewhere). Validation and test slides carry pixel truth; training slides "
        "carry it as 'truth_mask' for analysis only."
    ),
    "npl": (
        "NPL demo: lung-like slides with 5 adenocarcinoma subtype architectures sharing nuclei and stain, "
        "plus non-cancer alveoli/stroma. Supervised slides (centre C) are fully labelled; weak slides "
        "(centre D: stain and focus shift) carry subtype 'proportions' of their tumour area, a tumour "
        "outline ('tumour_mask') and, for analysis only, 'truth_mask'. Validation and test slides come from "
        "the weak slides' centre D and carry the full mask."
    ),
}


def _worker_init() -> None:
    """Memory settings of our own worker processes: rendering makes many large short-lived arrays.

    glibc returns each one to the OS (``mmap``/``munmap``, then page faults on the next); keeping
    them in the heap and skipping numpy's huge-page ``madvise`` halves the system time (measured).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 31)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass
    with contextlib.suppress(AttributeError):
        np._core.multiarray._set_madvise_hugepage(False)


def _existing(datalist: Path, generator: dict[str, Any]) -> bool:
    """True when ``datalist`` was written by the same generator settings and all its files exist."""
    try:
        data = json.loads(datalist.read_text())
    except (OSError, ValueError):
        return False
    if data.get("generator") != generator:
        return False
    root = datalist.parent
    keys = ("image", "mask", "tumour_mask", "truth_mask")
    for split in ("training", "validation", "test"):
        for s in data.get(split, []):
            if any(k in s and not (root / s[k]).is_file() for k in keys):
                return False
    return True


def _generator_record(task: str, seed: int, n_slides: int, options: dict[str, Any]) -> dict[str, Any]:
    """The datalist's ``generator`` entry: what a cohort is reused for (see :func:`_existing`)."""
    return {
        "module": "mixsup_monai.demo",
        "version": DEMO_VERSION,
        "task": task,
        "seed": seed,
        "n_slides": n_slides,
        "options": options,
    }


def _datalist(
    task: str, seed: int, generator: dict[str, Any], jobs: list[dict[str, Any]], slides: list[dict[str, Any]]
) -> dict[str, Any]:
    """The cohort's datalist: description, classes, centres and the slides of each split, in job order."""
    data: dict[str, Any] = {
        "name": f"mixsup-monai demo cohort: {task} (seed {seed})",
        "description": _DESCRIPTIONS[task],
        "task": task,
        "classes": TASK_CLASSES[task],
        "mpp": MPP,
        "mask_level": MASK_LEVEL,
        "centres": {c: CENTRES[c].description for c in sorted({s["centre"] for s in slides})},
        "generator": generator,
    }
    for split in ("training", "validation", "test"):
        data[split] = [s for s, j in zip(slides, jobs) if j["split"] == split]
    return data


def _clear_cohort(out: Path, task: str) -> None:
    """Create ``out/slides`` and ``out/masks`` and remove an older cohort of ``task`` there (datalist first)."""
    (out / "slides").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    datalist_path = out / "datalist.json"
    if datalist_path.exists():
        datalist_path.unlink()
    for folder, pattern in (("slides", f"{task}_*.tiff"), ("masks", f"{task}_*.png")):
        for stale in (out / folder).glob(pattern):
            stale.unlink()


def _render_slides(
    jobs: list[dict[str, Any]], desc: str, num_workers: int | None, progress: bool
) -> list[dict[str, Any]]:
    """The datalist entries of ``jobs``, in job order, each slide rendered and written by :func:`_make_slide`."""
    from tqdm.auto import tqdm

    workers = min(2, os.cpu_count() or 1) if num_workers is None else int(num_workers)
    workers = min(workers, len(jobs))
    bar = tqdm(total=len(jobs), desc=desc, unit="slide", disable=not progress)
    slides: list[dict[str, Any]] = []
    if workers > 1 and "fork" in mp.get_all_start_methods():
        # fork: no re-import of the caller's __main__ (CLI, notebooks); workers only use numpy/scipy
        with mp.get_context("fork").Pool(workers, initializer=_worker_init) as pool:
            for s in pool.imap(_make_slide, jobs, chunksize=1):
                slides.append(s)
                bar.update()
    else:
        for j in jobs:
            slides.append(_make_slide(j))
            bar.update()
    bar.close()
    return slides


def _add_lsr_table(data: dict[str, Any], out: Path, seed: int, options: dict[str, Any]) -> None:
    """Write ``out/label_stats.json`` (mask estimation on training blocks) and record it and the z rule in ``data``."""
    train_blocks = [b for s in data["training"] for b in s["blocks"]]
    table = mask_estimated_table(
        train_blocks,
        np.random.default_rng([int(seed), 2**31 - 1]),
        f"mask estimation: ~{LSR_TABLE_BLOCKS} training blocks per z, demo seed {seed}",
        options["z_bins"],
        LSR_TABLE_BLOCKS,
    )
    table.save(out / "label_stats.json")
    data["label_stats"] = "label_stats.json"
    data["lsr"] = {
        "block_size": LSR_BLOCK_SIZE,
        "min_tissue_fraction": LSR_MIN_TISSUE,
        "z_bins": options["z_bins"],
        "z_noise": options["z_noise"],
        "z_rule": "z = clip(floor((tumour_fraction + N(0, z_noise)) * z_bins), 0, z_bins - 1)",
    }


def make_demo_cohort(
    task: str,
    out_dir: str | os.PathLike,
    seed: int = 0,
    n_slides: int | None = None,
    progress: bool = True,
    num_workers: int | None = None,
    z_bins: int = LSR_Z_BINS,
    z_noise: float = LSR_Z_NOISE,
) -> Path:
    """Write a deterministic demo cohort with known pixel truth and return its datalist path.

    Slides are pyramidal tiled JPEG TIFFs (level 0 at :data:`MPP` µm/px, >= 3 levels) in
    ``out_dir/slides``, masks uint8 PNG label maps with exactly the size of level :data:`MASK_LEVEL`
    in ``out_dir/masks`` (value = class index, 255 = glass / unknown), and ``out_dir/datalist.json``
    in the project's datalist contract (paths relative to ``out_dir``); for ``lsr`` also
    ``out_dir/label_stats.json``. Slide ``i`` is drawn from ``np.random.default_rng([seed, i])``,
    so a cohort is identical for a seed whatever the number of workers. If ``out_dir/datalist.json``
    already records the same task, seed, slide count, options and :data:`DEMO_VERSION` (and its
    files exist), it is returned without regenerating.

    Every slide has ``image``, ``centre`` (stain centre, see ``textures.CENTRES``), ``group``,
    ``size`` (level-0 ``[W, H]``), ``tissue_fraction``, ``artefacts`` and ``mask_level``. Per task:

    * ``lsr``: ``mask`` (all slides), ``tumour_fraction``, ``blocks`` (each with ``z`` and the true
      ``tumour_fraction`` / ``tissue_fraction``); datalist ``label_stats`` and ``lsr`` (z rule).
    * ``mixsup``: ``label``, ``tumours`` / ``mimics`` (level-0 boxes and areas of the truth);
      group ``image`` (main centres A/B): label only, plus ``truth_mask`` for analysis; group
      ``pixel`` (centre C): ``mask`` valid inside ``regions`` (255 elsewhere) + ``truth_mask``;
      validation / test: ``mask``.
    * ``npl``: ``subtypes``, ``tumour_area_fraction``; group ``supervised`` (centre C): ``mask``;
      group ``weak`` (centre D): ``proportions`` (5 subtypes, sum 1), ``tumour_mask`` (1 tumour,
      0 other tissue, 255 glass) and ``truth_mask``; validation / test (centre D): ``mask`` and
      ``proportions``.

    ``truth_mask`` is the full pixel truth of a training slide, for analysis only, never for training.

    Args:
        task: ``"mixsup"``, ``"lsr"`` or ``"npl"`` (see ``DemoTask``).
        out_dir: output folder (created).
        seed: cohort seed.
        n_slides: total number of slides, split over the task's groups proportionally to the
            defaults (:data:`DEFAULT_GROUPS`); ``None`` = the default size.
        progress: show a progress bar over slides.
        num_workers: worker processes (default ``min(2, cpu_count)``; 0 or 1 = in this process).
        z_bins: LSR only, number of low-resolution bins.
        z_noise: LSR only, std of the noise added to a block's tumour fraction before binning.

    Returns:
        Path of ``datalist.json``.

    Raises:
        ValueError: unknown task, ``n_slides`` below the task's minimum, or invalid LSR options.
    """
    task = _task(task)
    if int(z_bins) < 2 or float(z_noise) < 0:
        raise ValueError(f"make_demo_cohort: z_bins must be >= 2 and z_noise >= 0, got {z_bins}, {z_noise}.")
    out = Path(out_dir)
    jobs = _plan(task, int(seed), n_slides)
    options = {"z_bins": int(z_bins), "z_noise": float(z_noise)} if task == "lsr" else {}
    generator = _generator_record(task, int(seed), len(jobs), options)
    datalist_path = out / "datalist.json"
    if _existing(datalist_path, generator):
        logger.info("demo cohort %s already exists (same generator settings), reusing it", datalist_path)
        return datalist_path
    _clear_cohort(out, task)
    for j in jobs:
        j["out_dir"] = str(out)
        j["options"] = options
    slides = _render_slides(jobs, f"demo {task}", num_workers, progress)

    data = _datalist(task, seed, generator, jobs, slides)
    if task == "lsr":
        _add_lsr_table(data, out, seed, options)
    tmp = datalist_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=4) + "\n")
    os.replace(tmp, datalist_path)
    return datalist_path
