import pytest
import torch
from monai.inferers import SlidingWindowInferer

from mixsup_monai.inferers import ContextSlidingWindowInferer

MARGIN = 16


def identity_with_garbage_border(x: torch.Tensor) -> torch.Tensor:
    """A network that is right on the centre of its window and wrong (100) on its unsupervised border."""
    out = x.clone()
    out[..., :MARGIN, :] = 100.0
    out[..., -MARGIN:, :] = 100.0
    out[..., :, :MARGIN] = 100.0
    out[..., :, -MARGIN:] = 100.0
    return out


def test_window_borders_do_not_reach_the_map():
    image = torch.rand(1, 2, 150, 170, generator=torch.Generator().manual_seed(0))
    ours = ContextSlidingWindowInferer(roi_size=96, margin=MARGIN, sw_batch_size=4)(image, identity_with_garbage_border)
    assert ours.shape == image.shape
    assert torch.allclose(ours, image, atol=0.05)
    # the plain inferer blends the borders in: the grid of artefacts this inferer exists to remove
    plain = SlidingWindowInferer(roi_size=96, overlap=0.5, mode="gaussian")(image, identity_with_garbage_border)
    assert (plain - image).abs().max() > 1.0


def test_zero_margin_is_the_plain_gaussian_inferer():
    image = torch.rand(1, 1, 80, 90, generator=torch.Generator().manual_seed(1))
    net = torch.nn.Conv2d(1, 2, 3, padding=1)
    with torch.no_grad():
        ours = ContextSlidingWindowInferer(roi_size=32, margin=0, overlap=0.25)(image, net)
        plain = SlidingWindowInferer(roi_size=32, overlap=0.25, mode="gaussian")(image, net)
    assert torch.allclose(ours, plain, atol=1e-6)


def test_centre_weight_map_is_negligible_on_the_border():
    weights = ContextSlidingWindowInferer.centre_weight_map((96, 96), MARGIN)
    centre = weights[MARGIN:-MARGIN, MARGIN:-MARGIN]
    assert weights.shape == (96, 96)
    assert float(weights[:MARGIN].max()) < 1e-3 * float(centre.min())
    assert float(centre.max()) == pytest.approx(1.0, rel=0.01)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"overlap": 0.25}, "leaves gaps"), ({"margin": 48}, "margin must be"), ({"mode": "constant"}, "is fixed")],
)
def test_invalid_settings_are_rejected(kwargs, message):
    settings = {"roi_size": 96, "margin": MARGIN, **kwargs}
    with pytest.raises(ValueError, match=message):
        ContextSlidingWindowInferer(**settings)
