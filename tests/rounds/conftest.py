"""Fixtures of the rounds tests: a tiny synthetic cohort and a small MixSup round runner."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tiny_cohort import make_cohort  # noqa: E402


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    return make_cohort(tmp_path_factory.mktemp("tiny_cohort"))


def build_runner(
    datalist: Path, ckpt_dir: Path, max_rounds: int, seed: int = 0, handlers=(), scorer_hook=None, train_handlers=()
):
    """A small MixSup round runner in plain Python (the bundle builds the same from JSON); ``train_handlers`` are
    added to the trainer's after its own (MONAI Label adds a ``CheckpointLoader`` there)."""
    import monai
    import torch
    from ignite.metrics import Average
    from monai.data import DataLoader
    from monai.engines import SupervisedTrainer
    from monai.networks.nets import BasicUNet, Classifier
    from monai.transforms import Compose, RandFlipd, SelectItemsd

    from mixsup_monai.data import load_datalist, slides_of
    from mixsup_monai.handlers.sampler_epoch import SamplerEpochSetter
    from mixsup_monai.methods.mixsup import (
        MixSupRule,
        PatchTargetd,
        SoftBCEWithLogitsLoss,
        TopKSlideClassifier,
        image_labelled_slides,
        region_patch_items,
    )
    from mixsup_monai.rounds import PoolBatchSampler, PoolDataset, RoundRunner, SlidePatchPredictor
    from mixsup_monai.transforms import LoadSlideRegiond

    monai.utils.set_determinism(seed=seed)
    data = load_datalist(datalist, task="mixsup")
    net = BasicUNet(spatial_dims=2, in_channels=3, out_channels=1, features=(4, 4, 8, 8, 16, 4))
    transform = Compose(
        [
            LoadSlideRegiond(keys="image", out_size=(32, 32), mask_key="mask", mask_output_key="label"),
            PatchTargetd(keys="label"),
            RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
            SelectItemsd(keys=["image", "label"]),
        ]
    )
    pixel = region_patch_items(data["training"], patch_size=32, level=1)
    dataset = PoolDataset({"pixel": pixel, "positive": [], "negative": []}, transform=transform)
    sampler = PoolBatchSampler(dataset, ratio=(2, 1, 7), batch_size=10, num_batches=2, seed=seed)
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=DataLoader(dataset, batch_sampler=sampler, num_workers=0),
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        loss_function=SoftBCEWithLogitsLoss(ignore_value=255),
        train_handlers=[SamplerEpochSetter(sampler), *train_handlers],
        key_train_metric={"train_loss": Average(output_transform=lambda out: out[0]["loss"])},
        amp=False,
    )
    predictor = SlidePatchPredictor(net, patch_size=32, level=1, progress=False)
    theta2 = Classifier(in_shape=(3, 32, 32), classes=1, channels=(4, 8), strides=(2, 2))
    scorer = TopKSlideClassifier(
        theta2,
        k=3,
        epochs=2,
        batch_size=2,
        seed=seed,
        predictor=predictor,
        validation_slides=slides_of(data, "validation"),
        shared_dir=Path(ckpt_dir) / "e_step",
    )
    if scorer_hook is not None:
        original = scorer.__call__

        class Hooked(type(scorer)):
            def __call__(self, predictions, round_index=0):
                scorer_hook(round_index)
                return original(predictions, round_index=round_index)

        scorer.__class__ = Hooked
    runner = RoundRunner(
        trainer,
        predictor,
        image_labelled_slides(data["training"]),
        MixSupRule(),
        scorer,
        ckpt_dir=str(ckpt_dir),
        max_rounds=max_rounds,
        initial_epochs=2,
        epochs_per_round=1,
        seed=seed,
        handlers=handlers,
    )
    return runner, net, theta2


@pytest.fixture(scope="session")
def runner_factory(tiny_cohort):
    def make(ckpt_dir: Path, max_rounds: int, **kwargs):
        return build_runner(tiny_cohort, ckpt_dir, max_rounds, **kwargs)

    return make


@pytest.fixture(scope="session")
def runner_builder():
    """:func:`build_runner` itself, for tests that build runners on another cohort (e.g. a copy they damage)."""
    return build_runner
