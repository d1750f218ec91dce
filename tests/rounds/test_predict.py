"""Tests of the E-step predictor (every tissue patch, slide by slide, in order) and of heat-map stitching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixsup_monai.data import load_datalist
from mixsup_monai.rounds import SlidePatchPredictor, SlidePrediction, stitch_patch_maps


class MeanColour(torch.nn.Module):
    """A 'network' whose output is 1 - mean intensity: dark (purple) tumour scores high, no weights needed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit((1 - x.mean(dim=1, keepdim=True)).clamp(1e-4, 1 - 1e-4))


def test_predicts_every_tissue_patch_of_every_slide_in_order(tiny_cohort):
    slides = load_datalist(tiny_cohort, task="mixsup")["training"]
    predictor = SlidePatchPredictor(MeanColour(), patch_size=32, level=1, batch_size=7, progress=False)
    preds = list(predictor.predict(slides))
    assert [p.slide["image"] for p in preds] == [s["image"] for s in slides]
    for pred in preds:
        grid, _ = predictor.grid(pred.slide)
        assert len(pred) == len(grid) == 36  # 384 px of tissue at level 0 = 6 x 6 patches of 32 px at level 1
        assert pred.outputs.shape == (36, 1, 32, 32) and pred.scores.shape == (36,)
        torch.testing.assert_close(pred.scores, pred.outputs.flatten(1).amax(1))
        assert pred.downsample == 2.0 and pred.patch_size0 == 64 and pred.slide_size == (512, 512)
    # the tumour box of train_pos0 ([128, 128, 128, 128], level 0) has the darkest patches
    top = preds[0].locations[int(torch.argmax(preds[0].scores))]
    assert 128 <= top[0] < 256 and 128 <= top[1] < 256


def test_outputs_written_to_disk_slide_by_slide_equal_the_in_memory_ones(tiny_cohort, tmp_path):
    slides = load_datalist(tiny_cohort, task="mixsup")["training"]
    kwargs = {"patch_size": 32, "level": 1, "batch_size": 5, "progress": False, "output_dtype": torch.float16}
    in_memory = list(SlidePatchPredictor(MeanColour(), **kwargs).predict(slides))
    predictor = SlidePatchPredictor(MeanColour(), output_dir=tmp_path / "e_step", **kwargs)
    on_disk = []
    for pred in predictor.predict(slides):  # batches of 5 cross the slides' 36-patch boundaries
        files = list((tmp_path / "e_step").rglob("slide_*.npy"))
        assert [f.name for f in files] == [f"slide_{len(on_disk):05d}.npy"]  # one slide's file, the earlier gone
        assert isinstance(pred.outputs, torch.Tensor) and pred.outputs.dtype == torch.float16
        on_disk.append((pred.outputs.clone(), pred.scores))
    assert list((tmp_path / "e_step").iterdir()) == []  # nothing left behind
    assert len(on_disk) == len(in_memory) == len(slides)
    for (outputs, scores), reference in zip(on_disk, in_memory):
        torch.testing.assert_close(outputs, reference.outputs, rtol=0, atol=0)
        torch.testing.assert_close(scores, reference.scores, rtol=0, atol=0)


def test_predictor_needs_a_network(tiny_cohort):
    slides = load_datalist(tiny_cohort, task="mixsup")["training"]
    with pytest.raises(ValueError, match="no network given"):
        list(SlidePatchPredictor(patch_size=32, level=1).predict(slides))


def test_stitch_patch_maps_hand_computed():
    maps = torch.zeros(2, 1, 4, 4)
    maps[0, 0, :2, :2] = 1.0  # top-left quarter of patch 0
    maps[1] = 0.5
    items = [
        {"image": "s", "location": [0, 0], "size": [4, 4], "level": 1},
        {"image": "s", "location": [8, 0], "size": [4, 4], "level": 1},
    ]
    pred = SlidePrediction({"image": "s"}, items, maps, maps.flatten(1).amax(1), downsample=2.0, slide_size=(16, 8))
    out = stitch_patch_maps(pred, out_downsample=4.0)  # each 8 px patch (level 0) covers 2 x 2 output pixels
    expected = np.array([[1.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]], np.float32)
    np.testing.assert_allclose(out, expected)
    np.testing.assert_allclose(
        stitch_patch_maps(pred, 4.0, values=torch.tensor([0.2, 0.9])), [[0.2, 0.2, 0.9, 0.9]] * 2
    )
