"""MONAI Label's ``BundleTrainTask`` (the monaibundle app's trainer) on a bad labelled tile: one clear line."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from mixsup_monai.utils.errors import InputError, reported_error

pytestmark = pytest.mark.label

BUNDLE_NAMES = ("lsr", "mixsup", "npl")


class _Datastore:
    """The one method of MONAI Label's ``Datastore`` that ``BundleTrainTask`` calls."""

    def __init__(self, records: list[dict]):
        self.records = records

    def datalist(self) -> list[dict]:
        return self.records


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_a_label_of_another_size_stops_training_naming_the_file(
    name: str, bundle_train: ModuleType, tile: Path, trainable_bundles: dict[str, Path], one_thread: None, tmp_path
) -> None:
    """A submitted label that does not cover its tile stops the run before any training, with the error that names
    the label file and both sizes (what the command line prints as its one line); ``models/model.pt`` is kept."""
    label = tmp_path / "label.png"
    Image.fromarray(np.ones((100, 80), np.uint8)).save(label)
    bundle = trainable_bundles[name]
    model = bundle / "models" / "model.pt"
    before = model.read_bytes()
    task = bundle_train.BundleTrainTask(str(bundle), {})
    request = {"model": name, "max_epochs": 1, "val_split": 0.0, "device": "cpu", "pretrained": True}
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the run's mlruns/ goes to the working directory
    try:
        with pytest.raises(Exception) as caught:
            task(request, _Datastore([{"image": str(tile), "label": str(label)}]))
    finally:
        os.chdir(cwd)
    error = reported_error(caught.value)
    assert isinstance(error, InputError), f"{name}: no one-line error in {caught.value!r}"
    assert str(label) in str(error) and "80 x 100 px" in str(error) and "512 x 512 px" in str(error)
    assert model.read_bytes() == before
