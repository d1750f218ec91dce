"""Tests of the segmentation metrics on hand-made masks with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixsup_monai.metrics import (
    SegmentationIoUDice,
    boundary_band,
    component_f1,
    iou_dice,
    masked_iou_dice,
    per_class_component_f1,
)

# 6 x 6: left half tumour (1), right half background (0); the boundary lies between columns 2 and 3
HALVES = np.zeros((6, 6), dtype=np.int64)
HALVES[:, :3] = 1


@pytest.mark.parametrize(
    ("case", "distance", "columns"),
    [
        ("zero", 0, []),
        ("touching_pixels", 1, [2, 3]),
        ("two_each_side", 2, [1, 2, 3, 4]),
        ("whole_image", 10, [0, 1, 2, 3, 4, 5]),
    ],
)
def test_boundary_band_reaches_distance_into_each_side(case, distance, columns):
    expected = np.zeros((6, 6), dtype=bool)
    expected[:, columns] = True
    np.testing.assert_array_equal(boundary_band(HALVES, distance), expected, err_msg=case)


def test_boundary_band_uses_euclidean_distance():
    dot = np.zeros((5, 5), dtype=bool)
    dot[2, 2] = True
    plus = np.zeros((5, 5), dtype=bool)
    plus[2, 1:4] = plus[1:4, 2] = True  # the dot and its 4-neighbours (distance 1); diagonals are at sqrt(2)
    np.testing.assert_array_equal(boundary_band(dot, 1), plus)
    square = np.zeros((5, 5), dtype=bool)
    square[1:4, 1:4] = True
    np.testing.assert_array_equal(boundary_band(dot, 1.5), square)


def test_boundary_band_ignores_unlabelled_pixels_and_single_class_masks():
    labels = np.zeros((4, 6), dtype=np.int64)
    labels[:, 3:] = 255  # unlabelled right half: not a boundary
    assert not boundary_band(labels, 3).any()
    assert not boundary_band(np.ones((4, 4), dtype=bool), 2).any()
    labels[:, :1] = 1
    band = boundary_band(labels, 1)
    assert band[:, :2].all() and not band[:, 2:].any()


def test_iou_dice_of_known_masks():
    target = np.array([[1, 1, 0, 0, 255]])
    pred = np.array([[1, 0, 1, 0, 1]])  # the last pixel is unlabelled: not counted
    out = iou_dice(pred, target)
    assert (out["tp"], out["fp"], out["fn"]) == (1, 1, 1)
    assert out["iou"] == pytest.approx(1 / 3) and out["dice"] == pytest.approx(0.5)
    every = iou_dice(pred, target, class_index=None)
    np.testing.assert_allclose(every["iou"], [1 / 3, 1 / 3])
    assert every["mean_dice"] == pytest.approx(0.5)
    region = np.array([[True, True, False, False, False]])
    assert iou_dice(pred, target, region_mask=region)["iou"] == pytest.approx(0.5)
    assert np.isnan(iou_dice(np.zeros((2, 2)), np.zeros((2, 2)))["iou"])  # tumour absent from both


def test_masked_iou_dice_counts_only_the_band():
    target = np.array([[1, 1, 1, 1, 0, 0, 0, 0]])
    pred = np.array([[1, 1, 1, 1, 1, 1, 0, 0]])
    # band of distance 2: columns 2..5 -> pred [1, 1, 1, 1] vs target [1, 1, 0, 0]: tp 2, fp 2, fn 0
    masked = masked_iou_dice(pred, target, band_distance=2)
    assert masked["band_pixels"] == 4
    assert masked["iou"] == pytest.approx(0.5) and masked["dice"] == pytest.approx(4 / 6)
    assert iou_dice(pred, target)["iou"] == pytest.approx(4 / 6)


def test_rejects_labels_outside_classes():
    with pytest.raises(ValueError, match=r"pred holds labels \[3\]: expected values in \[0, 2\)"):
        iou_dice(np.array([[3, 0]]), np.array([[1, 0]]))


def test_accumulator_gives_global_not_mean_iou():
    # image 1: target and prediction all tumour (tp 4); image 2: one tumour pixel missed (fn 1)
    # global IoU = 4 / 5; the mean of per-image IoUs would be (1 + 0) / 2
    y = torch.tensor([[[[1, 1], [1, 1]]], [[[1, 0], [0, 0]]]])
    y_pred = torch.tensor([[[[1, 1], [1, 1]]], [[[0, 0], [0, 0]]]])
    metric = SegmentationIoUDice()
    metric(y_pred=y_pred[:1], y=y[:1])
    metric(y_pred=[y_pred[1]], y=[y[1]])  # list of channel-first tensors
    assert metric.aggregate().item() == pytest.approx(0.8)
    assert metric.aggregate("dice").item() == pytest.approx(8 / 9)
    assert metric.results()["fn"] == 1
    metric.reset()
    assert np.isnan(metric.aggregate().item()) and metric.results()["tp"] == 0  # nothing accumulated
    probs = torch.nn.functional.one_hot(y_pred[:, 0], 2).permute(0, 3, 1, 2).float()  # (B, C, H, W)
    metric(y_pred=probs, y=y)
    assert metric.aggregate().item() == pytest.approx(0.8)
    assert metric.results()["tp"] == 4  # only the counts since the reset


# two 1 x W strips with hand-counted answers (channel-first (1, 1, W) label maps)
STRIP_TARGETS = [torch.tensor([[[1, 1, 1, 1, 0, 0, 0, 0]]]), torch.tensor([[[1, 1, 0, 0, 255, 255]]])]
STRIP_PREDS = [torch.tensor([[[1, 1, 1, 1, 1, 1, 0, 0]]]), torch.tensor([[[0, 1, 0, 1, 1, 1]]])]
# every pixel:  strip 1 tp 4, fp 2, fn 0; strip 2 (the 255 pixels not counted) tp 1, fp 1, fn 1
# band of 1 px: strip 1 columns 3, 4 -> tp 1, fp 1; strip 2 columns 1, 2 (255 is no boundary) -> tp 1
STRIP_EXPECTED = {"iou": 5 / 9, "dice": 10 / 14, "masked_iou": 2 / 3, "masked_dice": 4 / 5}


def strip_metric(name: str) -> SegmentationIoUDice:
    """The metric of a ``STRIP_EXPECTED`` name: ``masked_*`` counts a band of 1 px."""
    return SegmentationIoUDice(
        band_distance=1 if name.startswith("masked_") else None, metric=name.removeprefix("masked_")
    )


@pytest.mark.parametrize("name", sorted(STRIP_EXPECTED))
def test_accumulator_of_hand_counted_strips(name):
    metric = strip_metric(name)
    for pred, target in zip(STRIP_PREDS, STRIP_TARGETS):  # one image per iteration: counts are summed
        metric(y_pred=[pred], y=[target])
    assert metric.aggregate().item() == pytest.approx(STRIP_EXPECTED[name])


def test_accumulator_with_band():
    target = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0]])[None, None]
    pred = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]])[None, None]
    metric = SegmentationIoUDice(band_distance=2, class_index=None)
    metric(y_pred=pred, y=target)
    np.testing.assert_allclose(metric.aggregate().numpy(), [0.0, 0.5])
    # band columns 2..5: class 1 tp 2, fp 2, fn 0
    every = metric.results()
    assert (every["tp"][1], every["fp"][1], every["fn"][1]) == (2, 2, 0)
    assert every["dice"][1] == pytest.approx(4 / 6)


def test_one_channel_prediction_is_a_foreground_probability():
    target = torch.tensor([[[[1, 1, 0, 0]]]])
    metric = SegmentationIoUDice()
    metric(y_pred=torch.tensor([[[[0.9, 0.4, 0.6, 0.1]]]]), y=target)  # > 0.5: tp 1, fp 1, fn 1
    assert metric.aggregate().item() == pytest.approx(1 / 3)
    three = SegmentationIoUDice(num_classes=3, class_index=2)
    three(y_pred=torch.tensor([[[[2, 1, 2, 0]]]]), y=torch.tensor([[[[2, 2, 0, 0]]]]))  # class indices
    assert three.aggregate().item() == pytest.approx(1 / 3)


def test_accumulator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationIoUDice(num_classes=1)
    with pytest.raises(ValueError, match="class_index"):
        SegmentationIoUDice(class_index=2)
    with pytest.raises(ValueError, match="band_distance"):
        SegmentationIoUDice(band_distance=-1)
    with pytest.raises(ValueError, match="is not a valid value"):
        SegmentationIoUDice(metric="f1")
    with pytest.raises(ValueError, match="ground truth"):
        SegmentationIoUDice()(y_pred=torch.zeros(1, 1, 2, 2))


def test_ignite_metric_handler_resets_every_epoch():
    """The bundle's wiring: IgniteMetricHandler reads decollated pred / label from an evaluator's output."""
    from ignite.engine import Engine, Events
    from monai.handlers import IgniteMetricHandler, from_engine

    def process(engine, index):
        target = STRIP_TARGETS[index]
        if engine.state.epoch == 1:
            pred = STRIP_PREDS[index]
        else:  # epoch 2 is perfect: any count left over from epoch 1 would lower the scores
            pred = torch.where(target == 255, 0, target)
        probs = torch.nn.functional.one_hot(pred[0], 2).permute(2, 0, 1).float()  # (C, H, W) probabilities
        return [{"pred": probs, "label": target}]  # a decollated batch of one slide

    engine = Engine(process)
    for name in STRIP_EXPECTED:
        IgniteMetricHandler(strip_metric(name), output_transform=from_engine(["pred", "label"])).attach(engine, name)
    seen = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(dict(e.state.metrics)))
    engine.run([0, 1], max_epochs=2)
    assert seen[0] == pytest.approx(STRIP_EXPECTED)
    assert seen[1] == pytest.approx(dict.fromkeys(STRIP_EXPECTED, 1.0))


def _gather_worker(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        values = {}
        for name in STRIP_EXPECTED:
            metric = strip_metric(name)
            metric(y_pred=[STRIP_PREDS[rank]], y=[STRIP_TARGETS[rank]])  # each rank holds one strip
            values[name] = metric.aggregate().item()
        torch.save(values, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes import torch and MONAI
def test_counts_are_summed_over_ranks(tmp_path):
    """Two gloo processes, one strip each: both report the score of the two strips together."""
    torch.multiprocessing.spawn(_gather_worker, args=(str(tmp_path / "store"), str(tmp_path / "values")), nprocs=2)
    for rank in range(2):
        assert torch.load(tmp_path / f"values.{rank}") == pytest.approx(STRIP_EXPECTED)


def test_component_f1_matches_each_dot_at_most_once():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:5, 2:5] = True  # component A
    mask[12:15, 12:15] = True  # component B
    dots = [
        (3, 3),  # inside A
        (4, 4),  # inside A too: A is already matched, so this dot is a miss
        (16, 16),  # 1.4 px from B: matched within radius 3
        (18, 2),  # far from everything
    ]
    out = component_f1(mask, dots, radius=3)
    assert (out["tp"], out["n_detections"], out["n_dots"]) == (2, 2, 4)
    assert out["precision"] == 1.0 and out["recall"] == 0.5 and out["f1"] == pytest.approx(4 / 6)


def test_component_f1_maximises_matches():
    mask = np.zeros((10, 20), dtype=bool)
    mask[4:6, 4:6] = True  # A
    mask[4:6, 10:12] = True  # B
    # dot 1 lies between A and B (near both, closer to A); dot 2 is near A only: a greedy closest-first
    # matching would give dot 1 -> A and leave dot 2 unmatched
    out = component_f1(mask, [(5, 7), (5, 2)], radius=3)
    assert out["tp"] == 2 and out["f1"] == 1.0
    assert np.isnan(component_f1(np.zeros((3, 3), bool), np.zeros((0, 2)), radius=2)["f1"])


def test_per_class_component_f1():
    pred = np.zeros((10, 10), dtype=np.int64)
    pred[1:3, 1:3] = 1
    pred[6:8, 6:8] = 2
    out = per_class_component_f1(pred, {1: [(1, 1)], 2: [(1, 1)]}, radius=2, class_names={1: "CD3", 2: "CD8"})
    assert out["per_class"]["CD3"]["f1"] == 1.0 and out["per_class"]["CD8"]["f1"] == 0.0
    assert out["mean_f1"] == pytest.approx(0.5)
