"""Each bundle packaged for the MONAI Model Zoo passes what the zoo's ``ci/verify_bundle.py`` checks, offline.

The checks are MONAI's own API, called as the zoo calls it: its large files are "downloaded" with
``monai.apps.download_url`` (``file://`` URLs of the release copies), the version must have a changelog entry and no
release in ``model_info.json``, the metadata is verified against the local schema (nothing downloaded) and the
network against the metadata's shapes. With ``MODEL_ZOO_DIR`` pointing at a model-zoo checkout, the zoo's own
``ci/verify_bundle.py`` runs too (``-m min`` and ``-m full``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from mixsup_monai.cli import main as cli_main
from mixsup_monai.utils import InputError, InputNotFoundError, ZooPackage, package_for_zoo
from mixsup_monai.utils.zoo import LARGE_FILES, MODEL_INFO, file_md5, trained_files

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO.parent / "shared" / "schemas"
BUNDLES = ("lsr", "mixsup", "npl")
#: the files the zoo requires in a bundle (``verify_bundle.py``: necessary and preferred files)
REQUIRED = ("LICENSE", "configs/metadata.json", "configs/inference.json", "models/model.pt")
ZOO_TIMEOUT = 600


def _metadata(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / "configs" / "metadata.json").read_text())


def _schema(bundle: str) -> Path:
    """The local copy of the schema named in the bundle's metadata (skip when ../shared/schemas is absent)."""
    name = _metadata(REPO / "bundles" / bundle)["schema"].rsplit("/", 1)[-1]
    if not (SCHEMAS / name).is_file():
        pytest.skip(f"schema {SCHEMAS / name} not available (read-only ../shared material): the zoo check needs it")
    return SCHEMAS / name


def write_trained_files(bundle: str, folder: Path) -> Path:
    """``folder`` holding the bundle's trained files: a seeded random ``network_def`` as ``model.pt``, stand-ins."""
    root = REPO / "bundles" / bundle
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser["bundle_root"] = str(root)
    parser["device"] = "$torch.device('cpu')"
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), folder / "model.pt")
    for path in trained_files(_metadata(root))[1:]:
        stand_in = folder / Path(path).relative_to("models")
        if stand_in.suffix == ".json":
            stand_in.write_text(json.dumps({"round": 0, "files": {"model": "model.pt"}}))
        else:
            torch.save({"weight": torch.zeros(1)}, stand_in)
    return folder


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, ZooPackage]:
    """All three bundles packaged into one models path, as in the zoo's repository."""
    out = tmp_path_factory.mktemp("zoo")
    return {
        bundle: package_for_zoo(
            REPO / "bundles" / bundle,
            out,
            weights_dir=write_trained_files(bundle, out / "trained" / bundle),
            schema=_schema(bundle),
        )
        for bundle in BUNDLES
    }


def download_large_files(bundle_dir: Path) -> list[Path]:
    """What the zoo's ``ci/utils.py: download_large_files`` does: each entry through ``monai.apps.download_url``."""
    from monai.apps import download_url

    parser = ConfigParser()
    parser.read_config(str(bundle_dir / LARGE_FILES))
    paths = []
    for entry in parser.get()["large_files"]:
        entry = dict(entry)
        paths.append(bundle_dir / entry.pop("path"))
        download_url(filepath=paths[-1], progress=False, **entry)
    return paths


@pytest.fixture(scope="module")
def downloaded(packages) -> dict[str, list[Path]]:
    """The packaged bundles after the zoo's download step (the packages themselves hold no trained file)."""
    assert not any((package.bundle_dir / "models").exists() for package in packages.values())
    return {bundle: download_large_files(package.bundle_dir) for bundle, package in packages.items()}


@pytest.mark.parametrize("bundle", BUNDLES)
def test_large_files_download_into_a_complete_bundle(packages, downloaded, bundle):
    package = packages[bundle]
    expected = trained_files(_metadata(package.bundle_dir))
    assert [str(p.relative_to(package.bundle_dir)) for p in downloaded[bundle]] == expected
    for entry, path in zip(package.large_files, downloaded[bundle]):
        assert entry["url"].startswith("file://") and entry["hash_type"] == "md5"
        assert file_md5(path) == entry["hash_val"]
    missing = [name for name in REQUIRED if not (package.bundle_dir / name).is_file()]
    assert not missing, f"{bundle}: the zoo's required files are missing: {missing}"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_version_has_a_changelog_entry_and_no_release(packages, bundle):
    package = packages[bundle]
    metadata = _metadata(package.bundle_dir)
    assert metadata["version"] == package.version
    assert package.version in metadata["changelog"]
    released = json.loads((package.models_dir / MODEL_INFO).read_text())
    assert f"{bundle}_v{package.version}" not in released


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_verifies_against_the_local_schema(packages, monkeypatch, bundle):
    import monai.apps.utils
    from monai.bundle import verify_metadata

    def no_download(url, *args, **kwargs):
        raise AssertionError(f"verify_metadata tried to download {url}")

    monkeypatch.setattr(monai.apps.utils, "_download_with_progress", no_download)
    bundle_dir = packages[bundle].bundle_dir
    schema = bundle_dir / "eval" / "schema.json"
    assert file_md5(schema) == file_md5(_schema(bundle))
    verify_metadata(
        meta_file=str(bundle_dir / "configs/metadata.json"), filepath=str(schema), hash_val=file_md5(schema)
    )


@pytest.mark.parametrize("bundle", BUNDLES)
def test_network_verifies_against_the_metadata_shapes(packages, downloaded, bundle):
    from monai.bundle import verify_net_in_out

    bundle_dir = packages[bundle].bundle_dir
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle_dir / "configs/metadata.json"),
        config_file=str(bundle_dir / "configs/inference.json"),
        device="cpu",
        bundle_root=str(bundle_dir),
    )


def test_a_released_version_is_refused(tmp_path):
    weights = write_trained_files("lsr", tmp_path / "trained")
    (tmp_path / "out" / "models").mkdir(parents=True)
    version = _metadata(REPO / "bundles" / "lsr")["version"]
    released = {f"lsr_v{version}": {"checksum": "0", "source": "https://example.org/lsr.zip"}}
    (tmp_path / "out" / "models" / MODEL_INFO).write_text(json.dumps(released))
    with pytest.raises(InputError, match=f"version {version} of lsr is already released"):
        package_for_zoo(REPO / "bundles" / "lsr", tmp_path / "out", weights_dir=weights)
    assert json.loads((tmp_path / "out" / "models" / MODEL_INFO).read_text()) == released


def test_a_checkpoint_with_entries_is_refused(tmp_path):
    weights = write_trained_files("lsr", tmp_path / "trained")
    torch.save({"model": torch.load(weights / "model.pt"), "round": 2}, weights / "model.pt")  # the 0.1.0 layout
    with pytest.raises(InputError, match="model.pt is not a plain state dict of network_def"):
        package_for_zoo(REPO / "bundles" / "lsr", tmp_path / "out", weights_dir=weights)


def test_missing_trained_files_are_named(tmp_path):
    (tmp_path / "trained").mkdir()
    with pytest.raises(InputNotFoundError, match="models/model.pt, models/classifier.pt, models/selection.json"):
        package_for_zoo(REPO / "bundles" / "mixsup", tmp_path / "out", weights_dir=tmp_path / "trained")


def test_the_package_never_overwrites_the_bundle(tmp_path):
    bundle = tmp_path / "models" / "lsr"  # already in a zoo layout: packaging into tmp_path would replace it
    (bundle / "configs").mkdir(parents=True)
    shutil.copy2(REPO / "bundles" / "lsr" / "LICENSE", bundle / "LICENSE")
    shutil.copy2(REPO / "bundles" / "lsr" / "configs" / "metadata.json", bundle / "configs" / "metadata.json")
    with pytest.raises(InputError, match="the package would overwrite the bundle folder"):
        package_for_zoo(bundle, tmp_path, weights_dir=write_trained_files("lsr", tmp_path / "trained"))
    assert (bundle / "configs" / "metadata.json").is_file()


def test_command_line_packages_a_bundle(tmp_path, capsys):
    weights = write_trained_files("npl", tmp_path / "trained")
    cli_main(["zoo-package", str(REPO / "bundles" / "npl"), str(tmp_path / "out"), "--weights", str(weights)])
    printed = json.loads(capsys.readouterr().out)
    assert printed["bundle_dir"] == str((tmp_path / "out" / "models" / "npl").resolve())
    assert [entry["path"] for entry in printed["large_files"]] == ["models/model.pt", "models/selection.json"]
    assert (tmp_path / "out" / "models" / "npl" / LARGE_FILES).is_file()


def _model_zoo_dir() -> Path:
    folder = os.environ.get("MODEL_ZOO_DIR")
    if not folder or not (Path(folder) / "ci" / "verify_bundle.py").is_file():
        pytest.skip("set MODEL_ZOO_DIR to a Project-MONAI/model-zoo checkout (with ci/verify_bundle.py) to run it")
    return Path(folder)


@pytest.mark.parametrize("mode", ["min", "full"])
@pytest.mark.parametrize("bundle", BUNDLES)
def test_model_zoo_verify_bundle(tmp_path, bundle, mode):
    """The zoo's own checker on a fresh package (its download step included), in a subprocess."""
    zoo = _model_zoo_dir()
    weights = write_trained_files(bundle, tmp_path / "trained")
    package = package_for_zoo(REPO / "bundles" / bundle, tmp_path / "out", weights_dir=weights, schema=_schema(bundle))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "ci/verify_bundle.py", "-b", bundle, "-p", str(package.models_dir), "-m", mode]
    result = subprocess.run(command, cwd=zoo, env=env, capture_output=True, text=True, timeout=ZOO_TIMEOUT)
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-4000:]}"
    assert "metadata format is verified correctly." in result.stdout
    if mode == "full":
        assert "data shape is verified correctly." in result.stdout
        assert "export weights into TorchScript module successfully." in result.stdout
