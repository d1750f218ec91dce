"""Every bundle's metadata.json against the Model Zoo schema (offline copy in ../shared/schemas)."""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path

import pytest

import mixsup_monai

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO.parent / "shared" / "schemas" / "meta_schema_20240725.json"
#: bundle -> output channels of ``pred`` (the demo's classes)
BUNDLES = {"lsr": 2, "mixsup": 1, "npl": 6}
#: metadata version keys -> the distribution they pin
BASE_PINS = {"monai_version": "monai", "pytorch_version": "torch", "numpy_version": "numpy"}


def _metadata(bundle: str) -> dict:
    return json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())


def _installed(distribution: str) -> str | None:
    """The installed version of ``distribution`` without a local label (``2.14.1+cpu`` -> ``2.14.1``), or None."""
    try:
        return importlib.metadata.version(distribution).split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_metadata_validates_against_the_model_zoo_schema(bundle):
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.is_file():
        pytest.skip(f"schema {SCHEMA} not available (read-only ../shared material)")
    metadata = _metadata(bundle)
    jsonschema.validate(metadata, json.loads(SCHEMA.read_text()))
    outputs = metadata["network_data_format"]["outputs"]
    assert next(iter(outputs.values()))["num_channels"] == BUNDLES[bundle]
    assert metadata["version"] in metadata["changelog"]
    assert all(value > 0 for value in metadata["eval_metrics"].values()), "eval_metrics must be measured values"


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_pins_are_the_installed_versions(bundle):
    """Offline stand-in for "every pin exists on PyPI": each pin is what is installed and tested here."""
    metadata = _metadata(bundle)
    pins = {**{dist: metadata[key] for key, dist in BASE_PINS.items()}, **metadata["required_packages_version"]}
    wrong = {
        dist: f"pinned {pin}, installed {version}"
        for dist, pin in pins.items()
        if (version := _installed(dist)) is not None and version != pin
    }
    assert not wrong, f"{bundle}: pins that differ from the installed distributions: {wrong}"


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_mixsup_monai_pin_is_the_package_version(bundle):
    pyproject = (REPO / "pyproject.toml").read_text()
    project_version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert project_version == mixsup_monai.__version__
    assert _metadata(bundle)["required_packages_version"]["mixsup-monai"] == project_version


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_trained_files_are_named_and_described(bundle):
    trained = _metadata(bundle)["trained_files"]
    assert "models/model.pt" in trained
    assert all(path.startswith("models/") and description for path, description in trained.items())
