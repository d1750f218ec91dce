"""Tests of the helpers bundle configs call."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixsup_monai.utils import artifact_location, bundle_root_from_argv, raise_no_input, sqlite_tracking_uri


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["monai.bundle", "run", "--config_file", "bundles/lsr/configs/train.json"], "bundles/lsr"),
        (["monai.bundle", "run", "--config_file=bundles/lsr/configs/train.json"], "bundles/lsr"),
        (
            ["x", "--config_file", "['bundles/npl/configs/train.json','bundles/npl/configs/evaluate.json']"],
            "bundles/npl",
        ),
        (["x", "--config_file", "elsewhere/train.json"], "elsewhere"),
        (["x", "run"], None),
    ],
)
def test_bundle_root_from_argv(argv, expected):
    root = bundle_root_from_argv(default="DEFAULT", argv=argv)
    assert root == ("DEFAULT" if expected is None else str(Path(expected).resolve()))


def test_tracking_locations_write_nothing(tmp_path):
    """Bundle configs compute them when resolved, which must not write; ``initialize`` creates the folder."""
    assert sqlite_tracking_uri(tmp_path / "runs") == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert artifact_location(tmp_path / "runs") == (tmp_path / "runs" / "artifacts").as_uri()
    assert not (tmp_path / "runs").exists()


def test_raise_no_input_names_folder_and_key():
    with pytest.raises(FileNotFoundError, match=r"^no input slides found \(/data/x\): pass .*--input_slides"):
        raise_no_input("/data/x", "input_slides")
