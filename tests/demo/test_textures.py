"""Texture synthesis: noise fields, nuclei, stains, and the slide renderer on small maps."""

from __future__ import annotations

import numpy as np
import pytest

from mixsup_monai.demo.textures import (
    CENTRES,
    NUCLEUS_KINDS,
    Tex,
    jitter_stain,
    make_nucleus_bank,
    render_slide,
    resize_linear,
    smooth_noise,
    upsample_labels,
)


@pytest.mark.parametrize("scale", [1.0, 3.5, 20.0, 150.0])
def test_smooth_noise_shape_and_scale(scale):
    a = smooth_noise(np.random.default_rng(0), (301, 517), scale)
    b = smooth_noise(np.random.default_rng(0), (301, 517), scale)
    assert a.shape == (301, 517) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    if scale < 50:
        assert 0.7 < a.std() < 1.3


def test_resize_linear_keeps_constants_and_shape():
    out = resize_linear(np.full((5, 7), 3.0), (20, 28))
    assert out.shape == (20, 28)
    np.testing.assert_allclose(out, 3.0)


def test_upsample_labels_keeps_values_and_mostly_nearest():
    # regions of 16 x 16 label pixels = 64 x 64 level-0 px; the jitter moves boundaries by a few px
    lab = np.random.default_rng(1).integers(0, 3, (4, 5)).astype(np.uint8).repeat(16, 0).repeat(16, 1)
    out = upsample_labels(lab, (256, 320), np.random.default_rng(2))
    nearest = lab.repeat(4, 0).repeat(4, 1)
    assert out.shape == (256, 320) and set(np.unique(out)) <= {0, 1, 2}
    assert (out == nearest).mean() > 0.85


@pytest.mark.parametrize("kind", sorted(NUCLEUS_KINDS))
def test_nucleus_bank(kind):
    bank, angles = make_nucleus_bank(np.random.default_rng(0), kind, n=16)
    s = bank.shape[1]
    assert bank.shape == (16, s, s) and s % 2 == 1 and bank.min() >= 0 and bank.max() > 0.5
    assert np.all(np.diff(angles) >= 0)
    assert (bank[:, [0, -1], :] < 0.05).all() and (bank[:, :, [0, -1]] < 0.05).all()  # nuclei fit their template


def test_jitter_stain_keeps_unit_vectors():
    s = jitter_stain(CENTRES["A"], np.random.default_rng(0))
    assert np.linalg.norm(s.h) == pytest.approx(1.0) and np.linalg.norm(s.e) == pytest.approx(1.0)
    assert s != CENTRES["A"]


def test_every_texture_renders_small_and_tiny_regions():
    lo = np.full((48, 8 * len(RENDERED)), Tex.GLASS, np.uint8)
    for i, t in enumerate(RENDERED):
        lo[4:40, 8 * i + 1 : 8 * i + 7] = t  # a strip
        lo[44:46, 8 * i + 3 : 8 * i + 5] = t  # a 2 x 2 speck (8 level-0 px)
    rgb, info = render_slide(lo, (192, lo.shape[1] * 4), CENTRES["B"], np.random.default_rng(0), pen_prob=1.0)
    assert rgb.shape == (192, lo.shape[1] * 4, 3) and rgb.dtype == np.uint8
    assert info["n_nuclei"] > 0 and info["pen"] is not None


RENDERED = [t for t in Tex if t != Tex.GLASS]


def test_render_slide_is_deterministic_and_tissue_is_stained():
    lo = np.full((64, 64), Tex.GLASS, np.uint8)
    lo[10:54, 10:54] = Tex.STROMA
    lo[20:40, 20:40] = Tex.CARCINOMA
    a, _ = render_slide(lo, (256, 256), CENTRES["A"], np.random.default_rng(3), pen_prob=0, scratch_prob=0)
    b, _ = render_slide(lo, (256, 256), CENTRES["A"], np.random.default_rng(3), pen_prob=0, scratch_prob=0)
    np.testing.assert_array_equal(a, b)
    glass = a[:24, :24].reshape(-1, 3).mean(0)
    tissue = a[100:140, 100:140].reshape(-1, 3).mean(0)
    assert glass.min() > 220 and tissue[1] < glass[1] - 40  # eosin / haematoxylin absorb green
