"""MONAI Label's ``BundleInferTask`` (the monaibundle app's inferer) runs each bundle on a real H&E tile."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.label

BUNDLE_NAMES = ("lsr", "mixsup", "npl")


def _label_array(result: object) -> np.ndarray:
    """The label a ``BundleInferTask`` returned: a file it wrote (read and removed) or the array itself."""
    if isinstance(result, str):
        path = Path(result)
        try:
            with Image.open(path) as image:
                return np.asarray(image)
        finally:
            path.unlink(missing_ok=True)
    return np.asarray(result)


@pytest.mark.parametrize("shape", ["square", "non_square"])
@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_bundle_infer_task_labels_a_tile(
    name: str,
    shape: str,
    bundle_infer: ModuleType,
    tiles: dict[str, Path],
    trained_bundles: dict[str, Path],
    channel_defs: dict[str, dict[int, str]],
) -> None:
    """The label of a tile (the real one, and a non-square crop of it) has the tile's size and only values of the
    bundle's ``channel_def``."""
    tile = tiles[shape]
    task = bundle_infer.BundleInferTask(str(trained_bundles[name]), conf={})
    assert task.is_valid(), f"MONAI Label ignored bundle {name} (see its log: no inference.json or model.pt?)"

    result, params = task({"image": str(tile), "device": "cpu"})

    label = _label_array(result)
    with Image.open(tile) as image:
        width, height = image.size
    assert label.shape == (height, width), f"{name}: label {label.shape} for a {width} x {height} tile"
    values = set(np.unique(label).tolist())
    assert values <= set(channel_defs[name]), f"{name}: values {values} not in channel_def {channel_defs[name]}"
    assert isinstance(params, dict) and "latencies" in params
