"""Fixtures of the MONAI Label tests: the label stack, the real slides of ../shared/data, trained bundle copies.

Every test here needs monailabel 0.8.5 and the light dependencies of its server (``bash scripts/install_label.sh``)
and the real slides beside the repo; each skips with the reason when either is absent.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
SHARED_DATA = REPO.parent / "shared" / "data"
BUNDLE_NAMES = ("lsr", "mixsup", "npl")
#: a real 512 x 512 H&E tile of ../shared/data/tiles (RGBA PNG)
TILE_NAME = "tissue-level0-4302-10273-4814-10785.png"
SLIDE_NAME = "CMU-1-Small-Region.svs"
#: a non-square crop (width, height) of that tile: a label transposed somewhere on its way has the wrong size
CROP_SIZE = (384, 256)
#: the parts of a bundle the MONAI Label app gets (its models/ are written by the fixture)
BUNDLE_PARTS = ("configs", "docs", "LICENSE")
#: test-sized budgets written into the served copies' train.json before the server reads it (a user edits the same
#: keys); every bundle also trains on the session's tiny demo cohort instead of writing its own.
TRAIN_SETTINGS = {
    "lsr": {"val_interval": 1},
    "mixsup": {"max_rounds": 1, "epochs_per_round": 1, "batches_per_epoch": 2, "stage2_epochs": 1, "top_k": 2},
    "npl": {"max_rounds": 1, "epochs_per_round": 1, "batches_per_epoch": 2, "early_stopping_patience": 1},
}
#: config IDs that may hold MixSup's stage-2 network, whose weights inference.json loads from models/classifier.pt
STAGE2_IDS = ("stage2_network_def", "classifier_network_def", "classifier_def")


def _require(module: str) -> ModuleType:
    """Import ``module`` of MONAI Label, or skip the test with the install command.

    ``exc_type=ImportError``: a dependency of the server missing (itk, SimpleITK, ...) skips too.
    """
    reason = f"needs MONAI Label ({module} is not importable): bash scripts/install_label.sh"
    return pytest.importorskip(module, reason=reason, exc_type=ImportError)


@pytest.fixture(scope="session")
def bundle_infer() -> ModuleType:
    """``monailabel.tasks.infer.bundle`` (skips the test when MONAI Label is not installed)."""
    return _require("monailabel.tasks.infer.bundle")


@pytest.fixture(scope="session")
def bundle_train() -> ModuleType:
    """``monailabel.tasks.train.bundle`` (skips the test when MONAI Label is not installed)."""
    return _require("monailabel.tasks.train.bundle")


@pytest.fixture(scope="session")
def label_server_stack() -> ModuleType:
    """``monailabel.app``, the server the app script starts (skips the test when it is not importable)."""
    return _require("monailabel.app")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repo: the real slide and tiles (skips the test when it is absent)."""
    if not (SHARED_DATA / "wsi" / SLIDE_NAME).is_file() or not (SHARED_DATA / "tiles" / TILE_NAME).is_file():
        pytest.skip(f"needs the real slides of {SHARED_DATA} (wsi/{SLIDE_NAME}, tiles/{TILE_NAME})")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tile(shared_data: Path) -> Path:
    """The real H&E tile the tests infer on."""
    return shared_data / "tiles" / TILE_NAME


@pytest.fixture(scope="session")
def tiles(tile: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"square": the real 512 x 512 tile, "non_square": its top-left CROP_SIZE crop (PNG in tmp)}``."""
    from PIL import Image

    crop = tmp_path_factory.mktemp("tiles") / f"crop-{CROP_SIZE[0]}x{CROP_SIZE[1]}.png"
    with Image.open(tile) as image:
        image.crop((0, 0, *CROP_SIZE)).save(crop)
    return {"square": tile, "non_square": crop}


@pytest.fixture(scope="session")
def one_thread() -> Iterator[None]:
    """Torch on one thread while a label test runs in-process (2-core machines), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def channel_defs() -> dict[str, dict[int, str]]:
    """``{bundle: {value: name}}``: ``channel_def`` of the first output of each bundle's metadata (MONAI Label's
    labels; value 0 is the background)."""
    defs: dict[str, dict[int, str]] = {}
    for name in BUNDLE_NAMES:
        metadata = json.loads((BUNDLES / name / "configs" / "metadata.json").read_text())
        output = next(iter(metadata["network_data_format"]["outputs"].values()))
        defs[name] = {int(value): label for value, label in output["channel_def"].items()}
    return defs


def _write_random_weights(bundle: Path) -> None:
    """``models/model.pt`` (and MixSup's ``models/classifier.pt``) as plain state dicts of random networks, seed 0."""
    import torch
    from monai.bundle import ConfigParser

    config_file = bundle / "configs" / "inference.json"
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(bundle)
    models = bundle / "models"
    models.mkdir(exist_ok=True)
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), models / "model.pt")
    if "classifier.pt" in config_file.read_text():
        stage2 = next((i for i in STAGE2_IDS if i in parser.config), None)
        assert stage2, f"{config_file} loads classifier.pt but defines none of {STAGE2_IDS}"
        torch.save(parser.get_parsed_content(stage2).state_dict(), models / "classifier.pt")


@pytest.fixture(scope="session")
def trained_bundles(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Path]:
    """Copies of the three bundles with random-weight models: ``{name: bundle folder}`` under one models dir."""
    root = tmp_path_factory.mktemp("trained_bundles")
    bundles: dict[str, Path] = {}
    for name in BUNDLE_NAMES:
        bundle = root / name
        bundle.mkdir()
        for part in BUNDLE_PARTS:
            source = BUNDLES / name / part
            if source.is_dir():
                shutil.copytree(source, bundle / part)
            elif source.is_file():
                shutil.copy2(source, bundle / part)
        _write_random_weights(bundle)
        bundles[name] = bundle
    return bundles


@pytest.fixture(scope="session")
def trainable_bundles(trained_bundles: dict[str, Path], demo_datalist) -> dict[str, Path]:
    """The trained copies with :data:`TRAIN_SETTINGS` and the session's tiny demo datalist in ``configs/train.json``
    (written before a server reads them)."""
    for name, bundle in trained_bundles.items():
        train = bundle / "configs" / "train.json"
        config = json.loads(train.read_text())
        config.update(TRAIN_SETTINGS[name], datalist=str(demo_datalist(name)))
        train.write_text(json.dumps(config, indent=4))
    return trained_bundles
