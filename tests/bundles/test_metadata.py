"""Every bundle's metadata.json against the Model Zoo schema (offline copy in ../shared/schemas)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO.parent / "shared" / "schemas" / "meta_schema_20240725.json"
#: bundle -> output channels of ``pred`` (the demo's classes)
BUNDLES = {"lsr": 2, "mixsup": 1, "npl": 6}


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_metadata_validates_against_the_model_zoo_schema(bundle):
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.is_file():
        pytest.skip(f"schema {SCHEMA} not available (read-only ../shared material)")
    metadata = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
    jsonschema.validate(metadata, json.loads(SCHEMA.read_text()))
    outputs = metadata["network_data_format"]["outputs"]
    assert next(iter(outputs.values()))["num_channels"] == BUNDLES[bundle]
    assert metadata["version"] in metadata["changelog"]
    assert all(value > 0 for value in metadata["eval_metrics"].values()), "eval_metrics must be measured values"
