"""Synthetic H&E slide textures: Beer-Lambert stains, nuclei, stroma, glands, alveoli, glass, dust and pen."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import IntEnum

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "Tex",
    "Stain",
    "CENTRES",
    "jitter_stain",
    "smooth_noise",
    "resize_linear",
    "upsample_labels",
    "Canvas",
    "NUCLEUS_KINDS",
    "make_nucleus_bank",
    "RENDERERS",
    "render_slide",
]


class Tex(IntEnum):
    """Tissue textures of the demo slides (finer than the classes of any task; 255 = glass)."""

    STROMA = 0  # fibrous stroma with sparse fibroblasts
    ADIPOSE = 1  # fat lobule: large empty cells with thin walls
    MUCOSA = 2  # benign glands (regular, basal small nuclei) in loose lamina propria
    DUCTS = 3  # benign lobule: small two-layered ducts in loose stroma
    LYMPHOID = 4  # lymphoid aggregate: crowded small dark round nuclei (tumour mimic)
    INFLAMED = 5  # inflamed stroma: dense scattered lymphocytes / plasma cells (tumour mimic)
    CARCINOMA = 6  # invasive carcinoma: nests / cords of pleomorphic cells in desmoplastic stroma
    ADENOCARCINOMA = 7  # malignant crowded, irregular glands with stratified pleomorphic nuclei
    ALVEOLAR = 8  # normal lung: thin alveolar walls with sparse flat nuclei
    LEPIDIC = 9  # tumour cells lining intact alveolar walls
    ACINAR = 10  # round tumour glands with lumens
    PAPILLARY = 11  # finger-like fibrovascular cores lined by tumour cells
    MICROPAPILLARY = 12  # small floating tumour cell tufts in empty spaces
    SOLID = 13  # sheets of tumour cells
    GLASS = 255


# ---------------------------------------------------------------------------------------------
# stains and centres


@dataclass(frozen=True)
class Stain:
    """Beer-Lambert stain model of one centre (scanner + staining protocol).

    Attributes:
        h: optical-density (OD) direction of haematoxylin, RGB.
        e: OD direction of eosin, RGB.
        h_gain: concentration multiplier of haematoxylin (staining time / section thickness).
        e_gain: concentration multiplier of eosin.
        background: RGB intensity of empty glass (the light source ``I0``).
        blur: Gaussian blur sigma (level-0 px) of the stain fields (scanner focus).
        description: a word for people reading the datalist.
    """

    h: tuple[float, float, float]
    e: tuple[float, float, float]
    h_gain: float = 1.0
    e_gain: float = 1.0
    background: tuple[float, float, float] = (240.0, 238.0, 243.0)
    blur: float = 0.0
    description: str = ""


#: Named demo centres. ``A``/``B`` are the main centres of the MixSup and LSR cohorts, ``C`` the
#: distinct centre of MixSup's pixel-labelled slides and NPL's supervised slides, ``D`` the NPL weak
#: slides' centre (faded haematoxylin, strong eosin, warm glass, softer focus), ``E`` a third LSR centre.
CENTRES: dict[str, Stain] = {
    "A": Stain(
        h=(0.5626, 0.7201, 0.4062),
        e=(0.2159, 0.8012, 0.5581),
        description="standard H&E (Macenko reference stain vectors), neutral glass",
    ),
    "B": Stain(
        h=(0.52, 0.74, 0.43),
        e=(0.26, 0.86, 0.44),
        h_gain=0.95,
        e_gain=0.8,
        background=(243.0, 240.0, 236.0),
        description="lilac eosin, bluer haematoxylin, warm glass",
    ),
    "C": Stain(
        h=(0.72, 0.64, 0.27),
        e=(0.10, 0.78, 0.62),
        h_gain=1.2,
        e_gain=1.15,
        background=(234.0, 234.0, 246.0),
        description="dark blue haematoxylin, magenta-red eosin, cool glass",
    ),
    "D": Stain(
        h=(0.45, 0.80, 0.40),
        e=(0.08, 0.92, 0.38),
        h_gain=0.8,
        e_gain=1.25,
        background=(246.0, 240.0, 226.0),
        blur=0.9,
        description="faded purple haematoxylin, strong red eosin, yellowish glass, soft focus",
    ),
    "E": Stain(
        h=(0.60, 0.72, 0.35),
        e=(0.19, 0.84, 0.50),
        h_gain=1.1,
        e_gain=0.95,
        background=(238.0, 239.0, 240.0),
        blur=0.5,
        description="slightly dark haematoxylin, grey glass",
    ),
}


def _unit(v: np.ndarray) -> tuple[float, float, float]:
    v = np.clip(np.asarray(v, dtype=np.float64), 0.005, None)
    v = v / np.linalg.norm(v)
    return (float(v[0]), float(v[1]), float(v[2]))


def jitter_stain(stain: Stain, rng: np.random.Generator, amount: float = 1.0) -> Stain:
    """Per-slide variation around a centre's stain (stain vectors, gains, glass tint).

    Args:
        stain: the centre's stain.
        rng: random generator of the slide.
        amount: scale of the variation (0 = none).
    """
    h = _unit(np.asarray(stain.h) + rng.normal(0.0, 0.025 * amount, 3))
    e = _unit(np.asarray(stain.e) + rng.normal(0.0, 0.025 * amount, 3))
    bg = tuple(float(np.clip(b + rng.normal(0.0, 1.5 * amount), 200, 252)) for b in stain.background)
    return replace(
        stain,
        h=h,
        e=e,
        h_gain=float(stain.h_gain * np.exp(rng.normal(0.0, 0.07 * amount))),
        e_gain=float(stain.e_gain * np.exp(rng.normal(0.0, 0.07 * amount))),
        background=bg,
    )


# ---------------------------------------------------------------------------------------------
# fields


def _interp_axis(a: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    n_in = a.shape[axis]
    p = (np.arange(n_out, dtype=np.float32) + 0.5) * (n_in / n_out) - 0.5
    p = np.clip(p, 0, n_in - 1)
    i0 = np.floor(p).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = (p - i0).astype(np.float32)
    if axis == 0:
        out, d = a[i0], a[i1]
        w = w[:, None]
    else:
        out, d = a[:, i0], a[:, i1]
    d -= out
    d *= w
    out += d
    return out


def resize_linear(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Separable bilinear resize of a 2D float array to ``shape`` (pixel centres aligned)."""
    a = np.asarray(a, dtype=np.float32)
    if a.shape[1] != shape[1]:  # columns first, on the small array; then whole-row gathers
        a = _interp_axis(a, shape[1], 1)
    if a.shape[0] != shape[0]:
        a = _interp_axis(a, shape[0], 0)
    return a


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-like noise with correlation length ~``scale`` pixels.

    White noise on a coarse grid (one sample per ``scale`` px), smoothed and bilinearly up-sampled:
    cost is one full-resolution pass whatever the scale.
    """
    h, w = int(shape[0]), int(shape[1])
    f = max(1.0, float(scale))
    gh, gw = int(np.ceil(h / f)) + 4, int(np.ceil(w / f)) + 4
    g = ndi.gaussian_filter(rng.standard_normal((gh, gw), dtype=np.float32), 1.0, mode="reflect")
    g *= np.float32((1.15 if f > 1.0 else 1.0) / max(float(g.std()), 1e-6))  # bilinear loses ~13 % std
    if f == 1.0:
        return g[2 : 2 + h, 2 : 2 + w].copy()
    # interpolate only the part of the coarse grid under the output
    o = 2 * f
    gy0, gx0 = int(o // f) - 1, int(o // f) - 1
    sub = g[gy0 : gy0 + int(np.ceil(h / f)) + 3, gx0 : gx0 + int(np.ceil(w / f)) + 3]
    up = resize_linear(sub, (int(round(sub.shape[0] * f)), int(round(sub.shape[1] * f))))
    oo = int(round(o - gy0 * f))
    return up[oo : oo + h, oo : oo + w]


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float, sub: int = 4) -> np.ndarray:
    """Like :func:`smooth_noise` but with a continuous gradient (no bilinear kinks): for warps.

    Noise is made at ``1/sub`` resolution, Gaussian-smoothed there, then up-sampled.
    """
    h, w = shape
    lh, lw = -(-h // sub), -(-w // sub)
    lo = ndi.gaussian_filter(smooth_noise(rng, (lh, lw), max(scale / sub, 1.0)), 1.5, mode="nearest")
    lo /= max(float(lo.std()), 1e-6)
    return resize_linear(lo, (lh * sub, lw * sub))[:h, :w]


def smoothstep(x: np.ndarray) -> np.ndarray:
    """Hermite ramp of ``x`` clipped to [0, 1] (anti-aliased edges)."""
    x = np.clip(x, 0.0, 1.0, dtype=np.float32)
    y = x * np.float32(-2.0)
    y += np.float32(3.0)
    y *= x
    y *= x
    return y


def upsample_labels(
    labels: np.ndarray, shape: tuple[int, int], rng: np.random.Generator, jitter: float = 4.0
) -> np.ndarray:
    """Nearest up-sampling of a low-resolution label map with a smooth sub-cell jitter.

    The jitter (``jitter`` level-0 px) turns the staircase of a plain nearest up-sampling into
    wiggly, natural boundaries; the low-resolution map stays the truth (differences are < 1 px of it).
    """
    h, w = shape
    fy, fx = labels.shape[0] / h, labels.shape[1] / w
    half = (-(-h // 2), -(-w // 2))  # the jitter is smooth: make it at half resolution
    jy = np.repeat(np.repeat(smooth_noise(rng, half, 5.0) * (jitter * fy), 2, 0), 2, 1)[:h, :w]
    jx = np.repeat(np.repeat(smooth_noise(rng, half, 5.0) * (jitter * fx), 2, 0), 2, 1)[:h, :w]
    jy += ((np.arange(h, dtype=np.float32) + 0.5) * fy)[:, None]
    jx += ((np.arange(w, dtype=np.float32) + 0.5) * fx)[None, :]
    yy = np.clip(jy, 0, labels.shape[0] - 1).astype(np.intp)
    xx = np.clip(jx, 0, labels.shape[1] - 1).astype(np.intp)
    return labels[yy, xx]


def _grid_thin(yx: np.ndarray, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Keep at most one point per ``spacing`` cell (random one): near-regular spacing, vectorised."""
    if len(yx) == 0:
        return yx
    yx = yx[rng.permutation(len(yx))]
    off = rng.uniform(0, spacing, 2)
    cells = np.floor((yx + off) / spacing).astype(np.int64)
    key = cells[:, 0] * 1_000_003 + cells[:, 1]
    _, first = np.unique(key, return_index=True)
    return yx[np.sort(first)]


def _sample_pixels(mask: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson sample of ``rate`` points per pixel of a boolean mask; returns ``(N, 2)`` float (y, x)."""
    idx = np.flatnonzero(mask)
    n = rng.poisson(rate * idx.size)
    if n == 0 or idx.size == 0:
        return np.zeros((0, 2), np.float32)
    pick = idx[rng.integers(0, idx.size, n)]
    y, x = np.divmod(pick, mask.shape[1])
    return np.stack([y, x], 1).astype(np.float32) + rng.uniform(-0.5, 0.5, (n, 2)).astype(np.float32)


def _jittered_grid(shape: tuple[int, int], spacing: float, jitter: float, rng: np.random.Generator):
    """Jittered-grid points ``(N, 2)`` covering ``shape``."""
    ys = np.arange(spacing / 2, shape[0], spacing, dtype=np.float32)
    xs = np.arange(spacing / 2, shape[1], spacing, dtype=np.float32)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    pts = np.stack([yy.ravel(), xx.ravel()], 1)
    pts += rng.uniform(-jitter, jitter, pts.shape).astype(np.float32)
    return pts


class _GridVoronoi:
    """Voronoi tessellation of a jittered grid of seeds, with smooth distance fields.

    The nearest and second-nearest seeds are searched among the 3 x 3 neighbouring grid cells at
    ``1/step`` resolution, over coordinates bent by a smooth warp (curved walls). ``wall`` is the
    distance to the bisector of the two nearest seeds -- a continuous distance to the cell
    boundary -- so walls drawn from it have neither staircases nor wedges.

    Attributes:
        seeds: ``(N, 2)`` seed positions (level-0 px, crop coordinates), ``N = gy * gx``.
        present: ``(N,)`` bool, seeds kept (missing seeds make larger cells).
        ids, dist, wall: nearest seed index, distance to it and to the boundary, full resolution.
    """

    def __init__(self, rng, shape, spacing, jitter=0.35, keep=1.0, step=None, warp=0.0):
        h, w = shape
        step = int(step or max(2, min(4, spacing // 25)))
        gy, gx = int(np.ceil(h / spacing)) + 2, int(np.ceil(w / spacing)) + 2
        base = (np.stack(np.meshgrid(np.arange(gy), np.arange(gx), indexing="ij"), -1) - 1 + 0.5) * spacing
        pos = (base + rng.uniform(-jitter, jitter, (gy, gx, 2)) * spacing).astype(np.float32)
        present = rng.random((gy, gx)) < keep
        self.seeds = pos.reshape(-1, 2)
        self.present = present.reshape(-1)
        hs, ws = -(-h // step), -(-w // step)
        yy = np.broadcast_to((np.arange(hs, dtype=np.float32)[:, None] + 0.5) * step, (hs, ws))
        xx = np.broadcast_to((np.arange(ws, dtype=np.float32)[None, :] + 0.5) * step, (hs, ws))
        if warp > 0:
            sc = 1.5 * spacing / step
            yy = yy + warp * spacing * smooth_field(rng, (hs, ws), sc, sub=2)
            xx = xx + warp * spacing * smooth_field(rng, (hs, ws), sc, sub=2)
        cy = np.clip((yy / spacing + 1).astype(np.intp), 1, gy - 2)
        cx = np.clip((xx / spacing + 1).astype(np.intp), 1, gx - 2)
        inf = np.float32(1e9)
        d1 = np.full((hs, ws), inf, np.float32)
        d2 = np.full((hs, ws), inf, np.float32)
        i1 = np.zeros((hs, ws), np.int32)
        p1y, p1x, p2y, p2x = (np.zeros((hs, ws), np.float32) for _ in range(4))
        posy, posx = pos[..., 0], pos[..., 1]
        for oy in (-1, 0, 1):
            for ox in (-1, 0, 1):
                sy, sx = cy + oy, cx + ox
                py, px = posy[sy, sx], posx[sy, sx]
                d = np.hypot(py - yy, px - xx)
                d[~present[sy, sx]] = inf
                closer = d < d1
                second = ~closer & (d < d2)
                np.copyto(d2, d, where=second)
                np.copyto(p2y, py, where=second)
                np.copyto(p2x, px, where=second)
                np.copyto(d2, d1, where=closer)
                np.copyto(p2y, p1y, where=closer)
                np.copyto(p2x, p1x, where=closer)
                np.copyto(d1, d, where=closer)
                np.copyto(p1y, py, where=closer)
                np.copyto(p1x, px, where=closer)
                np.copyto(i1, (sy * gx + sx).astype(np.int32), where=closer)
        sep = np.maximum(np.hypot(p2y - p1y, p2x - p1x), 1e-3)
        wall = np.where(d2 < inf, (d2 * d2 - d1 * d1) / (2 * sep), 4 * spacing)
        self.ids = _nearest_up(i1, step, shape)
        self.dist = _up2(np.minimum(d1, 4 * spacing), step, shape)
        self.wall = _up2(np.minimum(wall, 4 * spacing).astype(np.float32), step, shape)


def _up2(a: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
    return resize_linear(a, (a.shape[0] * step, a.shape[1] * step))[: shape[0], : shape[1]]


def _capsules(rng, shape, spacing, length, width_var=0.0, keep=0.9, step=2, warp=0.15):
    """Distance to the nearest of randomly oriented, branching segments (fingers), one "Y" per grid cell."""
    h, w = shape
    gy, gx = int(np.ceil(h / spacing)) + 2, int(np.ceil(w / spacing)) + 2
    base = (np.stack(np.meshgrid(np.arange(gy), np.arange(gx), indexing="ij"), -1) - 1 + 0.5) * spacing
    a0 = (base + rng.uniform(-0.3, 0.3, (gy, gx, 2)) * spacing).astype(np.float32)
    ends = []
    for _ in range(2):  # two branches from the same base: a "V"/"Y" papilla
        ang = rng.uniform(0, 2 * np.pi, (gy, gx))
        ln = rng.uniform(*length, (gy, gx))
        ends.append(a0 + np.stack([np.sin(ang), np.cos(ang)], -1).astype(np.float32) * ln[..., None])
    has2 = rng.random((gy, gx)) < 0.5
    present = rng.random((gy, gx)) < keep
    hs, ws = -(-h // step), -(-w // step)
    yy = np.broadcast_to((np.arange(hs, dtype=np.float32)[:, None] + 0.5) * step, (hs, ws))
    xx = np.broadcast_to((np.arange(ws, dtype=np.float32)[None, :] + 0.5) * step, (hs, ws))
    sc = 1.5 * spacing / step
    yy = yy + warp * spacing * smooth_field(rng, (hs, ws), sc, sub=2)
    xx = xx + warp * spacing * smooth_field(rng, (hs, ws), sc, sub=2)
    cy = np.clip((yy / spacing + 1).astype(np.intp), 1, gy - 2)
    cx = np.clip((xx / spacing + 1).astype(np.intp), 1, gx - 2)
    best = np.full((hs, ws), 1e9, np.float32)
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            sy, sx = cy + oy, cx + ox
            a = a0[sy, sx]
            for k, e in enumerate(ends):
                b = e[sy, sx]
                ab = b - a
                t = ((yy - a[..., 0]) * ab[..., 0] + (xx - a[..., 1]) * ab[..., 1]) / np.maximum((ab**2).sum(-1), 1e-3)
                t = np.clip(t, 0, 1)
                d = np.hypot(yy - a[..., 0] - t * ab[..., 0], xx - a[..., 1] - t * ab[..., 1])
                ok = present[sy, sx] & (has2[sy, sx] if k else True)
                best = np.minimum(best, np.where(ok, d, 1e9))
    return _up2(np.minimum(best, 4 * spacing), step, shape)


def _nearest_up(a: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
    """Nearest up-sampling of an integer map by ``step``, cropped to ``shape``."""
    return np.repeat(np.repeat(a, step, 0), step, 1)[: shape[0], : shape[1]]


# ---------------------------------------------------------------------------------------------
# nuclei


#: Nucleus families: semi-axes ``a``/``b`` (px at 1 µm/px), outline irregularity, haematoxylin
#: density, rim (vesicular chromatin), nucleolus probability, chromatin texture.
NUCLEUS_KINDS: dict[str, dict] = {
    "lymph": dict(a=(2.6, 3.4), b=(2.3, 3.0), irr=0.06, dens=(1.5, 1.9), rim=0.1, nucl=0.0, chroma=0.15),
    "plasma": dict(a=(2.8, 3.4), b=(2.4, 3.0), irr=0.05, dens=(1.2, 1.5), rim=0.5, nucl=0.0, chroma=0.35),
    "fibro": dict(a=(5.0, 8.0), b=(1.1, 1.8), irr=0.08, dens=(1.1, 1.5), rim=0.0, nucl=0.0, chroma=0.1),
    "flat": dict(a=(4.0, 5.5), b=(1.4, 2.0), irr=0.06, dens=(1.0, 1.3), rim=0.0, nucl=0.0, chroma=0.1),
    "epi": dict(a=(3.4, 4.6), b=(2.6, 3.3), irr=0.06, dens=(0.85, 1.1), rim=0.25, nucl=0.2, chroma=0.2),
    "tumour": dict(a=(4.2, 7.0), b=(3.2, 5.2), irr=0.11, dens=(0.7, 1.3), rim=0.5, nucl=0.8, chroma=0.3),
    "centroblast": dict(a=(3.8, 5.0), b=(3.2, 4.4), irr=0.08, dens=(0.7, 0.95), rim=0.5, nucl=0.6, chroma=0.3),
}


_MAX_BOUND = 1.3  # largest outline radius relative to the ellipse


def make_nucleus_bank(rng: np.random.Generator, kind: str, n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n`` nucleus templates of one family.

    Args:
        rng: random generator.
        kind: a key of :data:`NUCLEUS_KINDS`.
        n: number of templates.

    Returns:
        ``(bank, angles)``: ``(n, S, S)`` float32 haematoxylin concentration and each template's
        long-axis angle (radians, sorted), so a caller can pick templates aligned with fibres.
    """
    p = NUCLEUS_KINDS[kind]
    r = int(np.ceil(p["a"][1] * _MAX_BOUND + 1.5))  # template half-size: the largest outline fits
    s = 2 * r + 1
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    ang = np.sort(rng.uniform(0, np.pi, n)).astype(np.float32)
    a = rng.uniform(*p["a"], n).astype(np.float32)
    b = np.minimum(rng.uniform(*p["b"], n).astype(np.float32), a)
    c, sn = np.cos(ang)[:, None, None], np.sin(ang)[:, None, None]
    u = xx * c + yy * sn
    v = -xx * sn + yy * c
    rho = np.sqrt((u / a[:, None, None]) ** 2 + (v / b[:, None, None]) ** 2)
    phi = np.arctan2(v / b[:, None, None], u / a[:, None, None])
    bound = np.ones_like(rho)
    for k in (2, 3, 4, 5):
        amp = rng.normal(0, p["irr"] / np.sqrt(k - 1), n).astype(np.float32)[:, None, None]
        bound += amp * np.cos(k * phi + rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None])
    bound = np.clip(bound, 0.7, _MAX_BOUND)
    inside = np.clip((bound - rho) * b[:, None, None] / 0.9 + 0.5, 0, 1)
    chroma = ndi.gaussian_filter(rng.standard_normal((n, s, s)).astype(np.float32), (0, 0.7, 0.7))
    chroma = 1 + p["chroma"] * chroma / max(float(chroma.std()), 1e-6)
    rim = p["rim"]
    prof = (1 - rim) + rim * 1.6 * np.clip(rho / bound, 0, 1) ** 2
    dens = rng.uniform(*p["dens"], n).astype(np.float32)[:, None, None]
    val = dens * inside * prof * np.clip(chroma, 0.3, None)
    has = rng.random(n) < p["nucl"]
    oy, ox = (rng.uniform(-0.35, 0.35, (2, n)) * b).astype(np.float32)
    dot = np.exp(-((yy - oy[:, None, None]) ** 2 + (xx - ox[:, None, None]) ** 2) / (2 * 0.9**2))
    val += (has * rng.uniform(0.5, 1.0, n)).astype(np.float32)[:, None, None] * dot * inside
    return val.astype(np.float32), ang


# ---------------------------------------------------------------------------------------------
# canvas


class Canvas:
    """Level-0 stain-concentration fields of one slide, composited into RGB by Beer-Lambert.

    Attributes:
        h, e: haematoxylin / eosin concentration (OD at unit gain).
        blood: red-cell OD amount; dust: grey-brown OD of dust / pigment; ink: pen-ink amount.
    """

    def __init__(self, shape: tuple[int, int], rng: np.random.Generator):
        self.shape = (int(shape[0]), int(shape[1]))
        self.h = np.zeros(self.shape, np.float32)
        self.e = np.zeros(self.shape, np.float32)
        self.blood = np.zeros(self.shape, np.float32)
        self.dust = np.zeros(self.shape, np.float32)
        self.ink = np.zeros(self.shape, np.float32)
        self.ink_od = np.zeros(3, np.float32)
        self._nuclei: dict[str, list[tuple[np.ndarray, np.ndarray | None]]] = {}
        self._banks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.rng = rng
        self._stroma: tuple[np.ndarray, np.ndarray, float] | None = None

    def stroma_fields(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Slide-wide collagen strands, cleft noise and strand angle (made once, shared by every stroma)."""
        if self._stroma is None:
            ang = float(self.rng.uniform(0, np.pi))
            fib = _fibres(self.rng, self.shape, float(self.rng.uniform(7.0, 9.5)), ang, float(self.rng.uniform(30, 60)))
            cleft = smooth_noise(self.rng, self.shape, 16)
            cleft += 0.4 * smooth_noise(self.rng, self.shape, 5)
            self._stroma = (fib, cleft, ang)
        return self._stroma

    def bank(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """The slide's template bank of a nucleus family (made on first use)."""
        if kind not in self._banks:
            self._banks[kind] = make_nucleus_bank(self.rng, kind)
        return self._banks[kind]

    def add_nuclei(self, kind: str, yx: np.ndarray, angle: float | np.ndarray | None = None) -> None:
        """Queue nuclei of a family at level-0 centres ``yx`` ``(N, 2)`` (optionally long-axis angles)."""
        if len(yx) == 0:
            return
        ang = None if angle is None else np.broadcast_to(np.asarray(angle, np.float32), (len(yx),))
        self._nuclei.setdefault(kind, []).append((np.asarray(yx, np.float32), ang))

    def stamp_nuclei(self) -> int:
        """Draw every queued nucleus into ``h`` (max-compositing, so overlaps stay nucleus-dark)."""
        total = 0
        flat = self.h.reshape(-1)
        H, W = self.shape
        for kind in sorted(self._nuclei):
            bank, angles = self.bank(kind)
            n_t, s, _ = bank.shape
            r = s // 2
            yx = np.concatenate([p for p, _ in self._nuclei[kind]])
            if any(a is not None for _, a in self._nuclei[kind]):
                want = np.concatenate(
                    [a if a is not None else self.rng.uniform(0, np.pi, len(p)) for p, a in self._nuclei[kind]]
                )
                pos = np.searchsorted(angles, np.mod(want, np.pi)) % n_t
                tid = (pos + self.rng.integers(-1, 2, len(pos))) % n_t
            else:
                tid = self.rng.integers(0, n_t, len(yx))
            c = np.rint(yx).astype(np.intp)
            ok = (c[:, 0] >= r) & (c[:, 0] < H - r) & (c[:, 1] >= r) & (c[:, 1] < W - r)
            c, tid = c[ok], tid[ok]
            if len(c) == 0:
                continue
            dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
            offs = (dy * W + dx).ravel()
            vals = bank.reshape(n_t, -1)
            keep = vals.max(0) > 0.02
            offs, vals = offs[keep], vals[:, keep]
            for start in range(0, len(c), 20000):
                cc, tt = c[start : start + 20000], tid[start : start + 20000]
                idx = (cc[:, 0] * W + cc[:, 1])[:, None] + offs[None, :]
                v = vals[tt]
                m = v > 0.02
                np.maximum.at(flat, idx[m], v[m])
            total += len(c)
        self._nuclei.clear()
        return total

    def to_rgb(self, stain: Stain, rng: np.random.Generator, noise: float = 1.6) -> np.ndarray:
        """Beer-Lambert composition ``I = I0 * exp(-OD)`` with sensor noise; returns ``(H, W, 3)`` uint8."""
        h, e = self.h, self.e
        if stain.blur > 0:
            h = ndi.gaussian_filter(h, stain.blur, truncate=2.5)
            e = ndi.gaussian_filter(e, stain.blur, truncate=2.5)
        hv = np.asarray(stain.h, np.float32) * stain.h_gain
        ev = np.asarray(stain.e, np.float32) * stain.e_gain
        blood_od = np.asarray([0.10, 1.00, 0.85], np.float32) * stain.e_gain
        dust_od = np.asarray([0.80, 0.85, 0.95], np.float32)
        grain = rng.standard_normal(self.shape, dtype=np.float32)
        grain *= np.float32(noise)
        grain += np.float32(0.5)  # rounding
        # red cells, dust and ink touch few pixels: add their OD only there
        extra = np.flatnonzero((self.blood > 0) | (self.dust > 0) | (self.ink > 0.005))
        out = np.empty((*self.shape, 3), np.uint8)
        od = np.empty(self.shape, np.float32)
        flat = od.reshape(-1)
        for ch in range(3):
            np.multiply(h, hv[ch], out=od)
            od += e * ev[ch]
            flat[extra] += (
                self.blood.reshape(-1)[extra] * blood_od[ch]
                + self.dust.reshape(-1)[extra] * dust_od[ch]
                + self.ink.reshape(-1)[extra] * self.ink_od[ch]
            )
            np.negative(od, out=od)
            np.exp(od, out=od)
            od *= np.float32(stain.background[ch])
            od += grain
            np.clip(od, 0, 255, out=od)
            out[..., ch] = od
        return out


# ---------------------------------------------------------------------------------------------
# texture renderers: fn(canvas, sl, region, rng, tissue_edge) -> None, writing inside ``region``


def _put(target: np.ndarray, sl: tuple[slice, slice], region: np.ndarray, value: np.ndarray | float) -> None:
    view = target[sl]
    if np.isscalar(value):
        view[region] = value
    else:
        np.copyto(view, value.astype(np.float32, copy=False), where=region)


def _offset(sl: tuple[slice, slice], yx: np.ndarray) -> np.ndarray:
    return yx + np.asarray([sl[0].start, sl[1].start], np.float32)


def _fibres(rng: np.random.Generator, shape: tuple[int, int], period: float, angle: float, waviness: float):
    """Wavy collagen strands in [0, 1], broken and varying in strength along their length."""
    h, w = shape
    warp = smooth_field(rng, shape, 150)
    warp *= np.float32(waviness)
    warp += smooth_field(rng, shape, 50) * np.float32(0.12 * waviness)
    warp += np.arange(w, dtype=np.float32)[None, :] * np.float32(np.cos(angle))
    warp += np.arange(h, dtype=np.float32)[:, None] * np.float32(np.sin(angle))
    warp *= np.float32(1.0 / period)  # strand coordinate across strands
    frac = np.abs(np.mod(warp, np.float32(1.0)) - np.float32(0.5))
    prof = smoothstep((np.float32(0.3) - frac) * np.float32(1 / 0.18))
    strength = smooth_noise(rng, shape, 22)
    strength *= np.float32(1.2)
    strength += np.float32(1.0)
    prof *= smoothstep(strength)
    return prof


def stroma(cv: Canvas, sl, region, rng, density: float = 0.55, cell_rate: float = 1 / 1800, loose: float = 0.0):
    """Eosinophilic fibrous stroma: wavy collagen strands, clefts, sparse spindle fibroblasts, capillaries."""
    fib_all, cleft_all, ang = cv.stroma_fields()
    fib, cleft = fib_all[sl], cleft_all[sl]
    base = (0.62 - 0.3 * loose) + (0.38 - 0.1 * loose) * fib
    gaps = smoothstep((cleft - (2.0 - 1.1 * loose)) * 2.0)
    e = base * (density * (1 + 0.15 * smooth_noise(rng, region.shape, 70)))
    e *= 1 - 0.85 * gaps
    _put(cv.e, sl, region, e)
    _put(cv.h, sl, region, 0.04 * e)
    pts = _sample_pixels(region & (gaps < 0.5), cell_rate, rng)
    cv.add_nuclei("fibro", _offset(sl, pts), angle=np.pi / 2 + ang + 0.25 * rng.standard_normal(len(pts)))
    cv.add_nuclei("lymph", _offset(sl, _sample_pixels(region, cell_rate * 0.12, rng)))
    _capillaries(cv, sl, region, rng, rate=1 / 70000)


def _disc_patches(cv: Canvas, sl, region, centres: np.ndarray, radii: np.ndarray, draw: Callable) -> None:
    """Call ``draw(view_slices, d, inside)`` on a small patch around each centre (d = distance, px)."""
    H, W = region.shape
    for (y, x), r in zip(np.rint(centres).astype(int), radii):
        m = int(np.ceil(r)) + 4
        y0, y1, x0, x1 = max(y - m, 0), min(y + m + 1, H), max(x - m, 0), min(x + m + 1, W)
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        d = np.sqrt((yy - y) ** 2 + (xx - x) ** 2).astype(np.float32)
        view = (slice(sl[0].start + y0, sl[0].start + y1), slice(sl[1].start + x0, sl[1].start + x1))
        draw(view, d, region[y0:y1, x0:x1])


def _capillaries(cv: Canvas, sl, region, rng, rate: float):
    """Small vessels: a ring of endothelium around a lumen with red cells."""
    pts = _sample_pixels(region, rate, rng)
    if len(pts) == 0:
        return
    radii = rng.uniform(4, 12, len(pts))
    rbc_noise = rng.random((len(pts), 64, 64)) > 0.55

    def draw(view, d, inside, k=[0]):  # noqa: B006 - a call counter
        r = radii[k[0]]
        wall = inside & (d > r) & (d < r + 2.5)
        lumen = inside & (d <= r)
        cv.e[view][wall] = 0.8
        cv.e[view][lumen] = 0.05
        rb = rbc_noise[k[0], : d.shape[0], : d.shape[1]]
        cv.blood[view][lumen & rb] = 0.6
        ring = np.argwhere(wall)[:: max(1, int(wall.sum() // 4) or 1)]
        cv.add_nuclei("flat", ring + np.asarray([view[0].start, view[1].start], np.float32))
        k[0] += 1

    _disc_patches(cv, sl, region, pts, radii, draw)


def adipose(cv: Canvas, sl, region, rng):
    """Fat: large empty polygonal cells with thin eosinophilic walls and rare flat nuclei."""
    vor = _GridVoronoi(rng, region.shape, rng.uniform(55, 75), 0.35, warp=0.06)
    dw = vor.wall + 0.25 * smooth_noise(rng, region.shape, 8)
    wall = smoothstep((1.3 - dw) / 1.2)
    _put(cv.e, sl, region, 0.75 * wall)
    _put(cv.h, sl, region, 0.02 * wall)
    cv.add_nuclei("flat", _offset(sl, _grid_thin(_sample_pixels(region & (dw < 0.8), 1 / 300, rng), 30, rng)))


def _gland_fields(region, rng, spacing, r_lumen, thick, warp_amp, keep=0.85):
    """Per-pixel ring coordinate of glands centred on jittered-grid seeds.

    Returns:
        ``(q, lumen, epi)``: ``q`` = (distance - lumen radius) / thickness (0 at the luminal surface,
        1 at the basement membrane) and boolean masks of lumen and epithelium.
    """
    vor = _GridVoronoi(rng, region.shape, spacing, 0.3, keep=keep)
    n = len(vor.seeds)
    rl = rng.uniform(*r_lumen, n).astype(np.float32)
    th = rng.uniform(*thick, n).astype(np.float32)
    d = vor.dist + warp_amp * smooth_noise(rng, region.shape, 14)
    # keep neighbouring glands apart by a thin stroma septum
    th_px = np.minimum(th[vor.ids], np.maximum(vor.dist + vor.wall * 2 - rl[vor.ids] - 4, 0) + 1e-3)
    q = (d - rl[vor.ids]) / np.maximum(th_px, 3.0)
    q = np.where(vor.wall < 2.0, 9.0, q)
    lumen = region & (q < 0)
    epi = region & (q >= 0) & (q < 1)
    return q.astype(np.float32), lumen, epi


def mucosa(cv: Canvas, sl, region, rng):
    """Benign gastric-like mucosa: regular round glands, basal small nuclei, pale mucinous cytoplasm."""
    stroma(cv, sl, region, rng, density=0.38, cell_rate=1 / 900, loose=0.7)
    cv.add_nuclei("plasma", _offset(sl, _sample_pixels(region, 1 / 700, rng)))
    q, lumen, epi = _gland_fields(region, rng, rng.uniform(62, 78), (6, 12), (14, 18), 1.5)
    _put(cv.e, sl, lumen, 0.03)
    _put(cv.h, sl, lumen, 0.0)
    _put(cv.e, sl, epi, 0.14 + 0.08 * q)
    _put(cv.h, sl, epi, 0.08)
    band = epi & (q > 0.62) & (q < 0.9)
    cv.add_nuclei("epi", _offset(sl, _grid_thin(_sample_pixels(band, 1 / 6, rng), 6.5, rng)))


def ducts(cv: Canvas, sl, region, rng):
    """Benign breast-like lobule: small two-layered ducts (luminal + flat myoepithelial) in loose stroma."""
    stroma(cv, sl, region, rng, density=0.4, cell_rate=1 / 1200, loose=0.6)
    q, lumen, epi = _gland_fields(region, rng, rng.uniform(45, 60), (3, 7), (10, 13), 1.0)
    _put(cv.e, sl, lumen, 0.05)
    _put(cv.h, sl, lumen, 0.0)
    _put(cv.e, sl, epi, 0.3)
    _put(cv.h, sl, epi, 0.06)
    cv.add_nuclei("epi", _offset(sl, _grid_thin(_sample_pixels(epi & (q < 0.6) & (q > 0.2), 1 / 6, rng), 7, rng)))
    cv.add_nuclei("flat", _offset(sl, _grid_thin(_sample_pixels(epi & (q > 0.85), 1 / 6, rng), 10, rng)))


def lymphoid(cv: Canvas, sl, region, rng, edge=None):
    """Lymphoid aggregate: crowded small dark round nuclei, paler germinal centre with larger cells.

    ``edge`` (optional, crop-sized) is the depth (px) inside the aggregate: the centre becomes a
    germinal centre.
    """
    _put(cv.e, sl, region, 0.22 + 0.05 * smooth_noise(rng, region.shape, 20))
    _put(cv.h, sl, region, 0.05)
    pts = _jittered_grid(region.shape, rng.uniform(6.6, 7.6), 2.0, rng)
    y, x = np.clip(np.rint(pts).astype(np.intp), 0, np.asarray(region.shape) - 1).T
    inner = np.zeros(region.shape, bool)
    if edge is not None:
        depth = edge
        mx = float(depth[region].max()) if region.any() else 0.0
        inner = region & (depth > max(0.55 * mx, 60)) & (smooth_noise(rng, region.shape, 40) > -0.8)
    keep = region[y, x] & ~inner[y, x] & (rng.random(len(pts)) < 0.93)
    cv.add_nuclei("lymph", _offset(sl, pts[keep]))
    if inner.any():
        _put(cv.e, sl, inner, 0.3)
        cv.add_nuclei("centroblast", _offset(sl, _grid_thin(_sample_pixels(inner, 1 / 30, rng), 10, rng)))
        cv.add_nuclei("lymph", _offset(sl, _sample_pixels(inner, 1 / 300, rng)))


def inflamed(cv: Canvas, sl, region, rng):
    """Inflamed stroma: loose oedematous stroma crowded with lymphocytes and plasma cells."""
    stroma(cv, sl, region, rng, density=0.45, cell_rate=1 / 2500, loose=0.8)
    dens = np.clip(0.6 + 0.45 * smooth_noise(rng, region.shape, 50), 0.15, 1.0)
    pts = _sample_pixels(region, 1 / 45, rng)
    if len(pts):
        y, x = np.clip(pts.astype(np.intp), 0, np.asarray(region.shape) - 1).T
        pts = pts[rng.random(len(pts)) < dens[y, x]]
    lym = rng.random(len(pts)) < 0.7
    cv.add_nuclei("lymph", _offset(sl, pts[lym]))
    cv.add_nuclei("plasma", _offset(sl, pts[~lym]))


def _tumour_cells(cv: Canvas, sl, cells, rng, spacing=(13.0, 16.0), cyto=(0.3, 0.1)):
    """Sheets of pleomorphic tumour cells: amphophilic cytoplasm, faint cell borders, one nucleus per cell."""
    if not cells.any():
        return
    vor = _GridVoronoi(rng, cells.shape, rng.uniform(*spacing), 0.3)
    pts = vor.seeds + rng.normal(0, 1.2, vor.seeds.shape).astype(np.float32)
    y, x = np.rint(pts).astype(np.intp).T
    inside = (y >= 0) & (y < cells.shape[0]) & (x >= 0) & (x < cells.shape[1])
    inside[inside] = cells[y[inside], x[inside]]
    e = cyto[0] * (1 + 0.15 * smooth_noise(rng, cells.shape, 25)) + 0.14 * smoothstep((1.4 - vor.wall) / 1.0)
    _put(cv.e, sl, cells, e)
    _put(cv.h, sl, cells, cyto[1])
    cv.add_nuclei("tumour", _offset(sl, pts[inside & (rng.random(len(pts)) < 0.96)]))


def carcinoma(cv: Canvas, sl, region, rng):
    """Invasive carcinoma: irregular nests and cords of pleomorphic cells in dense desmoplastic stroma."""
    stroma(cv, sl, region, rng, density=0.62, cell_rate=1 / 1500)
    n = smooth_noise(rng, region.shape, rng.uniform(25, 40)) + 0.4 * smooth_noise(rng, region.shape, 9)
    nests = region & (n > rng.uniform(-0.6, -0.1))
    _tumour_cells(cv, sl, nests, rng)
    cv.add_nuclei("lymph", _offset(sl, _sample_pixels(region & ~nests, 1 / 900, rng)))


def adenocarcinoma(cv: Canvas, sl, region, rng):
    """Malignant glands: crowded, irregular, back-to-back glands with stratified pleomorphic nuclei."""
    stroma(cv, sl, region, rng, density=0.55, cell_rate=1 / 1500)
    q, lumen, epi = _gland_fields(region, rng, rng.uniform(55, 70), (5, 15), (16, 24), 5.0, keep=0.95)
    _put(cv.e, sl, lumen, 0.05)
    _put(cv.h, sl, lumen, 0.02)
    debris = lumen & (smooth_noise(rng, region.shape, 4) > 1.3)
    _put(cv.e, sl, debris, 0.45)
    _put(cv.e, sl, epi, 0.32)
    _put(cv.h, sl, epi, 0.12)
    cv.add_nuclei("tumour", _offset(sl, _grid_thin(_sample_pixels(epi & (q > 0.12), 1 / 5, rng), 10, rng)))
    solid_part = region & ~lumen & ~epi & (smooth_noise(rng, region.shape, 60) > 0.9)
    _tumour_cells(cv, sl, solid_part, rng)


def _alveoli(rng, shape, spacing, thickness, thick_var=1.2):
    """Alveolar walls: a Voronoi net with wavy, variably thick septa. Returns ``(wall_dist, thickness)``."""
    vor = _GridVoronoi(rng, shape, spacing, 0.4, warp=0.3)
    dw = vor.wall + 0.3 * smooth_noise(rng, shape, 10)
    th = thickness + thick_var * np.clip(smooth_noise(rng, shape, 60), -0.6, 2)
    return dw, th


def alveolar(cv: Canvas, sl, region, rng):
    """Normal lung: thin alveolar walls with capillary red cells, sparse flat pneumocytes, macrophages."""
    dw, th = _alveoli(rng, region.shape, rng.uniform(90, 130), 3.2)
    wall = smoothstep((th - dw) / 1.5)
    _put(cv.e, sl, region, 0.6 * wall + 0.01)
    _put(cv.h, sl, region, 0.03 * wall)
    cv.blood[sl][region & (wall > 0.5) & (smooth_noise(rng, region.shape, 3) > 1.1)] = 0.45
    walls = region & (dw < th)
    cv.add_nuclei("flat", _offset(sl, _grid_thin(_sample_pixels(walls, 1 / 30, rng), 15, rng)))
    cv.add_nuclei("lymph", _offset(sl, _sample_pixels(walls, 1 / 1500, rng)))
    # alveolar macrophages: pink round cells floating in air spaces
    mac = _sample_pixels(region & (dw > 14), 1 / 30000, rng)
    if len(mac):

        def draw(view, d, inside):
            cv.e[view][inside & (d < 7)] = 0.4

        _disc_patches(cv, sl, region, mac, np.full(len(mac), 7.0), draw)
        cv.add_nuclei("epi", _offset(sl, mac + rng.uniform(-2, 2, mac.shape).astype(np.float32)))
    pig = region & (smooth_noise(rng, region.shape, 30) > 2.2) & (smooth_noise(rng, region.shape, 2) > 1.0)
    cv.dust[sl][pig] += 0.9


def lepidic(cv: Canvas, sl, region, rng):
    """Lepidic: intact, slightly thickened alveolar walls lined by a continuous row of tumour cells."""
    dw, th = _alveoli(rng, region.shape, rng.uniform(85, 125), 3.0, 1.0)
    wall = smoothstep((th - dw) / 1.5)
    lining = region & (dw >= th) & (dw < th + 9)
    _put(cv.e, sl, region, 0.6 * wall + 0.01)
    _put(cv.h, sl, region, 0.03 * wall)
    _put(cv.e, sl, lining, 0.3)
    _put(cv.h, sl, lining, 0.1)
    band = region & (dw > th + 3) & (dw < th + 6)
    cv.add_nuclei("tumour", _offset(sl, _grid_thin(_sample_pixels(band, 1 / 4, rng), 10, rng)))


def acinar(cv: Canvas, sl, region, rng):
    """Acinar: round tumour glands with open lumens in fibrous stroma."""
    stroma(cv, sl, region, rng, density=0.5, cell_rate=1 / 1500)
    q, lumen, epi = _gland_fields(region, rng, rng.uniform(60, 75), (7, 14), (14, 18), 2.0, keep=0.85)
    _put(cv.e, sl, lumen, 0.02)
    _put(cv.h, sl, lumen, 0.0)
    _put(cv.e, sl, epi, 0.3)
    _put(cv.h, sl, epi, 0.1)
    band = epi & (q > 0.3) & (q < 0.75)
    cv.add_nuclei("tumour", _offset(sl, _grid_thin(_sample_pixels(band, 1 / 4, rng), 10, rng)))


def papillary(cv: Canvas, sl, region, rng):
    """Papillary: branching finger-like fibrovascular cores lined by tumour cells, in air spaces."""
    shape = region.shape
    d = _capsules(rng, shape, rng.uniform(55, 70), (35, 70))
    core_w = 5.0 + 1.5 * np.clip(smooth_noise(rng, shape, 50), -1, 1.5)
    core = region & (d < core_w)
    lining = region & (d >= core_w) & (d < core_w + 10)
    _put(cv.e, sl, region, 0.015)
    _put(cv.h, sl, region, 0.0)
    _put(cv.e, sl, core, 0.5 * (0.8 + 0.3 * cv.stroma_fields()[0][sl]))
    _put(cv.h, sl, core, 0.02)
    cv.blood[sl][core & (smooth_noise(rng, shape, 2.5) > 1.8)] = 0.4
    cv.add_nuclei("fibro", _offset(sl, _sample_pixels(core, 1 / 500, rng)))
    _put(cv.e, sl, lining, 0.3)
    _put(cv.h, sl, lining, 0.1)
    band = lining & (d > core_w + 3) & (d < core_w + 6.5)
    cv.add_nuclei("tumour", _offset(sl, _grid_thin(_sample_pixels(band, 1 / 4, rng), 10, rng)))


def micropapillary(cv: Canvas, sl, region, rng):
    """Micropapillary: small floating tufts of tumour cells (no cores) in empty spaces between thin walls."""
    shape = region.shape
    dw, th = _alveoli(rng, shape, rng.uniform(140, 190), 2.4, 0.6)
    wall = smoothstep((th - dw) / 1.5)
    _put(cv.e, sl, region, 0.55 * wall + 0.015)
    _put(cv.h, sl, region, 0.02 * wall)
    vor = _GridVoronoi(rng, shape, rng.uniform(34, 44), 0.3, keep=0.8)
    n = len(vor.seeds)
    rad = rng.uniform(9, 16, n).astype(np.float32)
    d = vor.dist + 1.5 * smooth_noise(rng, shape, 5)
    r = rad[vor.ids]
    tuft = region & (d < r) & (dw > th + 4)
    _put(cv.e, sl, tuft, 0.5)
    _put(cv.h, sl, tuft, 0.1)
    ok = vor.present
    y, x = np.rint(vor.seeds).astype(np.intp).T
    inside = ok & (y >= 0) & (y < shape[0]) & (x >= 0) & (x < shape[1])
    inside[inside] = tuft[y[inside], x[inside]]
    # nuclei around each tuft's periphery ("inside-out" polarity), one or two inside
    k = 9
    ang = (np.arange(k) * (2 * np.pi / 7))[None, :] + rng.uniform(0, 2 * np.pi, (n, 1))
    rr = np.where(np.arange(k) < 7, 0.62, 0.15)[None, :] * rad[:, None]
    nuc = vor.seeds[:, None, :] + np.stack([np.sin(ang), np.cos(ang)], -1) * rr[..., None]
    use = inside[:, None] & (rng.random((n, k)) < 0.75)
    cv.add_nuclei("tumour", _offset(sl, nuc[use].astype(np.float32)))


def solid(cv: Canvas, sl, region, rng):
    """Solid: sheets of polygonal tumour cells without glands or lumens."""
    _tumour_cells(cv, sl, region, rng)
    cv.add_nuclei("lymph", _offset(sl, _sample_pixels(region, 1 / 1500, rng)))


#: Renderer of each texture.
RENDERERS: dict[Tex, Callable] = {
    Tex.STROMA: stroma,
    Tex.ADIPOSE: adipose,
    Tex.MUCOSA: mucosa,
    Tex.DUCTS: ducts,
    Tex.LYMPHOID: lymphoid,
    Tex.INFLAMED: inflamed,
    Tex.CARCINOMA: carcinoma,
    Tex.ADENOCARCINOMA: adenocarcinoma,
    Tex.ALVEOLAR: alveolar,
    Tex.LEPIDIC: lepidic,
    Tex.ACINAR: acinar,
    Tex.PAPILLARY: papillary,
    Tex.MICROPAPILLARY: micropapillary,
    Tex.SOLID: solid,
}


# ---------------------------------------------------------------------------------------------
# glass artefacts


_INKS = {  # OD of pen inks (green, blue, red, black)
    "green": (1.35, 0.35, 0.50),
    "blue": (1.20, 0.95, 0.25),
    "red": (0.20, 1.30, 1.10),
    "black": (1.1, 1.1, 1.0),
}


def _stroke_points(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A smooth random pen stroke (arc or line) as densely sampled ``(N, 2)`` points."""
    h, w = shape
    if rng.random() < 0.5:  # an arc circling part of the slide
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        r = rng.uniform(0.35, 0.55) * min(h, w)
        t0 = rng.uniform(0, 2 * np.pi)
        t = np.linspace(t0, t0 + rng.uniform(0.6, 1.6), 400)
        rr = r * (1 + 0.05 * np.sin(3 * t + rng.uniform(0, 6)))
        pts = np.stack([cy + rr * np.sin(t), cx + rr * np.cos(t)], 1)
    else:  # a short line / tick near the border
        side = rng.integers(4)
        m = rng.uniform(0.04, 0.12)
        p0 = np.array([rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w])
        p0[side % 2] = (m if side < 2 else 1 - m) * shape[side % 2]
        d = rng.normal(0, 1, 2)
        d[side % 2] *= 0.2
        d /= np.linalg.norm(d) + 1e-9
        length = rng.uniform(0.15, 0.35) * min(h, w)
        t = np.linspace(0, 1, 300)[:, None]
        bend = np.sin(np.pi * t) * rng.normal(0, 0.08) * length
        pts = p0 + t * d * length + bend * np.array([-d[1], d[0]])
    return pts


def glass_artefacts(
    cv: Canvas,
    rng: np.random.Generator,
    pen_prob: float = 0.35,
    scratch_prob: float = 0.2,
) -> dict:
    """Dust specks, lint fibres, an occasional pen mark and scratch on the glass.

    Args:
        cv: the slide canvas.
        rng: random generator.
        pen_prob: probability of a pen mark.
        scratch_prob: probability of a scratch line.

    Returns:
        What was drawn (``{"pen": colour | None, "scratch": bool}``).
    """
    H, W = cv.shape
    flat = cv.dust.reshape(-1)
    # dust specks
    n = rng.integers(150, 500)
    yx = np.stack([rng.integers(3, H - 3, n), rng.integers(3, W - 3, n)], 1)
    rad = rng.choice([0, 0, 0, 1, 1, 2], n)
    amp = rng.uniform(0.25, 1.2, n).astype(np.float32)
    dy, dx = np.mgrid[-2:3, -2:3]
    for rr in (0, 1, 2):
        sel = rad == rr
        m = (dy**2 + dx**2) <= rr * rr + (rr > 0)
        offs = (dy[m] * W + dx[m]).ravel()
        idx = (yx[sel, 0] * W + yx[sel, 1])[:, None] + offs[None, :]
        np.maximum.at(flat, idx.ravel(), np.repeat(amp[sel], len(offs)))
    # lint fibres: thin curvy dark lines
    for _ in range(rng.integers(0, 3)):
        p = np.array([rng.uniform(0, H), rng.uniform(0, W)])
        ang = rng.uniform(0, 2 * np.pi)
        steps = rng.integers(150, 500)
        turn = np.cumsum(rng.normal(0, 0.05, steps)) + ang
        pts = p + np.cumsum(np.stack([np.sin(turn), np.cos(turn)], 1), 0)
        pts = np.rint(pts).astype(np.intp)
        ok = (pts[:, 0] >= 0) & (pts[:, 0] < H) & (pts[:, 1] >= 0) & (pts[:, 1] < W)
        cv.dust[pts[ok, 0], pts[ok, 1]] = np.maximum(cv.dust[pts[ok, 0], pts[ok, 1]], 0.5)
    drawn: dict = {"pen": None, "scratch": False}
    # pen mark: computed at low resolution, soft edges and blotchy ink
    if rng.random() < pen_prob:
        f = 8
        lo = (-(-H // f), -(-W // f))
        colour = str(rng.choice(["green", "blue", "red", "black"], p=[0.4, 0.3, 0.2, 0.1]))
        pts = _stroke_points(rng, (H, W)) / f
        img = np.ones(lo, bool)
        p = np.rint(pts).astype(np.intp)
        ok = (p[:, 0] >= 0) & (p[:, 0] < lo[0]) & (p[:, 1] >= 0) & (p[:, 1] < lo[1])
        if ok.any():
            img[p[ok, 0], p[ok, 1]] = False
            d = ndi.distance_transform_edt(img).astype(np.float32) * f
            width = rng.uniform(12, 30)
            amount = smoothstep((width - d) / 10.0) * rng.uniform(0.55, 1.0)
            amount *= np.clip(1 + 0.25 * smooth_noise(rng, lo, 3), 0.4, 1.3)
            cv.ink = resize_linear(amount, (H, W))
            cv.ink_od = np.asarray(_INKS[colour], np.float32)
            drawn["pen"] = colour
    if rng.random() < scratch_prob:
        a = rng.uniform(0, np.pi)
        c = rng.uniform(0.2, 0.8) * np.array([H, W])
        dist = np.abs(
            (np.arange(H, dtype=np.float32)[:, None] - c[0]) * np.cos(a)
            - (np.arange(W, dtype=np.float32)[None, :] - c[1]) * np.sin(a)
        )
        line = smoothstep((1.6 - dist) / 1.2)
        line *= smoothstep(smooth_noise(rng, (H, W), 150) + 0.8)
        cv.dust += 0.18 * line
        drawn["scratch"] = True
    return drawn


# ---------------------------------------------------------------------------------------------
# whole slide


def render_slide(
    tex_lo: np.ndarray,
    shape: tuple[int, int],
    stain: Stain,
    rng: np.random.Generator,
    renderers: dict[Tex, Callable] | None = None,
    pen_prob: float = 0.35,
    scratch_prob: float = 0.2,
) -> tuple[np.ndarray, dict]:
    """Render a level-0 RGB slide from a low-resolution texture map.

    Args:
        tex_lo: ``(h, w)`` uint8 map of :class:`Tex` values (255 = glass); an integer down-sampling
            of ``shape`` (the demo uses level 2, i.e. ``shape / 4``).
        shape: level-0 ``(H, W)``.
        stain: the slide's stain (see :func:`jitter_stain`).
        rng: random generator of the slide.
        renderers: texture renderers (default :data:`RENDERERS`).
        pen_prob: probability of a pen mark on the glass.
        scratch_prob: probability of a scratch.

    Returns:
        ``(rgb, info)``: ``(H, W, 3)`` uint8 image and what was drawn (nuclei count, artefacts).
    """
    renderers = RENDERERS if renderers is None else renderers
    H, W = shape
    f = H // tex_lo.shape[0]
    cv = Canvas(shape, rng)
    tex0 = upsample_labels(tex_lo, shape, rng)
    tissue_lo = tex_lo != Tex.GLASS
    for t in np.unique(tex_lo):
        if t == Tex.GLASS:
            continue
        t = Tex(int(t))
        lab, _ = ndi.label(tex_lo == t)
        for i, box in enumerate(ndi.find_objects(lab), start=1):
            if box is None:
                continue
            pad = 2
            y0, y1 = max(box[0].start - pad, 0), min(box[0].stop + pad, tex_lo.shape[0])
            x0, x1 = max(box[1].start - pad, 0), min(box[1].stop + pad, tex_lo.shape[1])
            sl = (slice(y0 * f, min(y1 * f, H)), slice(x0 * f, min(x1 * f, W)))
            region = tex0[sl] == t
            if not region.any():
                continue
            if t == Tex.LYMPHOID:
                lo = lab[y0:y1, x0:x1] == i
                d_lo = ndi.distance_transform_edt(np.pad(lo, 1)).astype(np.float32)[1:-1, 1:-1] * f
                depth = resize_linear(d_lo, ((y1 - y0) * f, (x1 - x0) * f))[
                    : sl[0].stop - sl[0].start, : sl[1].stop - sl[1].start
                ]
                renderers[t](cv, sl, region, rng, edge=depth)
            else:
                renderers[t](cv, sl, region, rng)
    n_nuclei = cv.stamp_nuclei()
    # staining unevenness and darker tissue edges
    tissue0 = tex0 != Tex.GLASS
    mod = 1 + 0.1 * smooth_noise(rng, shape, 300) + 0.06 * smooth_noise(rng, shape, 60)
    edge_lo = ndi.distance_transform_edt(tissue_lo).astype(np.float32) * f
    edge = np.exp(-resize_linear(edge_lo, shape) / 40.0)
    gain = mod * (1 + 0.25 * edge)
    cv.h *= gain
    cv.e *= gain
    cv.e[~tissue0] = 0.0
    cv.h[~tissue0] = 0.0
    drawn = glass_artefacts(cv, rng, pen_prob=pen_prob, scratch_prob=scratch_prob)
    rgb = cv.to_rgb(stain, rng)
    return rgb, {"n_nuclei": int(n_nuclei), **drawn}
