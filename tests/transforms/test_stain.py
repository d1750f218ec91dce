"""HED stain jitter: identity when not drawn, the stains scaled and shifted as drawn, valid images out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.color import rgb2hed

from mixsup_monai.transforms import RandHEDJitterd


def _he_image() -> torch.Tensor:
    """``(3, 32, 48)`` float: H&E-like purple (nuclei) and pink (stroma) halves."""
    image = torch.empty(3, 32, 48)
    image[:, :, :24] = torch.tensor([0.45, 0.25, 0.6])[:, None, None]
    image[:, :, 24:] = torch.tensor([0.9, 0.6, 0.78])[:, None, None]
    return image


def test_prob_zero_is_the_identity_and_prob_one_changes_the_colours():
    image = _he_image()
    assert RandHEDJitterd(prob=0.0)({"image": image})["image"] is image
    jitter = RandHEDJitterd(prob=1.0, sigma=0.2, bias=0.05)
    jitter.set_random_state(seed=0)
    out = jitter({"image": image})["image"]
    assert out.shape == image.shape and out.dtype == image.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float((out - image).abs().mean()) > 0.01


def test_each_stain_is_scaled_and_shifted_as_drawn():
    image = _he_image()
    jitter = RandHEDJitterd(prob=1.0, sigma=(0.3, 0.0, 0.0), bias=0.0)  # haematoxylin only
    jitter.set_random_state(seed=3)
    out = jitter({"image": image})["image"]
    alpha = jitter.alpha
    assert alpha[1] == alpha[2] == 1.0 and alpha[0] != 1.0
    before = rgb2hed(image.numpy().transpose(1, 2, 0).astype(np.float64))
    after = rgb2hed(out.numpy().transpose(1, 2, 0).astype(np.float64))
    assert after[..., 0].mean() == pytest.approx(alpha[0] * before[..., 0].mean(), rel=0.05)
    assert after[..., 1].mean() == pytest.approx(before[..., 1].mean(), rel=0.05)


def test_same_seed_same_draw_and_bad_arguments():
    image = _he_image()
    outs = []
    for _ in range(2):
        jitter = RandHEDJitterd(prob=1.0)
        jitter.set_random_state(seed=7)
        outs.append(jitter({"image": image})["image"])
    assert torch.equal(outs[0], outs[1])
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        RandHEDJitterd(sigma=-0.1)
    with pytest.raises(ValueError, match=r"expected a \(3, H, W\) RGB image"):
        jitter = RandHEDJitterd(prob=1.0)
        jitter({"image": torch.zeros(1, 8, 8)})
