"""RestrictToTissued: predictions on glass become background, predictions on tissue are kept."""

from __future__ import annotations

import pytest
import torch

from mixsup_monai.transforms import RestrictToTissued, tissue_region


def slide_image() -> torch.Tensor:
    """(3, 32, 32): glass (near-white) with a pink-purple tissue square in rows/cols 8..23."""
    image = torch.full((3, 32, 32), 0.94)
    image[:, 8:24, 8:24] = torch.tensor([0.85, 0.45, 0.70])[:, None, None]
    return image


def test_tissue_region_finds_the_square():
    region = tissue_region(slide_image())
    assert region[8:24, 8:24].all() and region.sum() == 16 * 16


def test_prediction_outside_tissue_becomes_background():
    pred = torch.zeros(2, 32, 32)
    pred[1] = 0.8  # "tumour" everywhere, glass included
    pred[0] = 0.2
    out = RestrictToTissued(keys="pred")({"pred": pred, "image": slide_image()})["pred"]
    assert torch.equal(out[:, 8:24, 8:24], pred[:, 8:24, 8:24])
    assert (out[0, :8] == 1).all() and (out[1, :8] == 0).all()
    assert (out[1, :, 24:] == 0).all()


def test_rejects_image_that_is_not_channel_first_rgb():
    with pytest.raises(ValueError, match=r"expected a \(3, H, W\) image"):
        tissue_region(torch.zeros(32, 32))
