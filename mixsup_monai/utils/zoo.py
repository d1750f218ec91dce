"""MONAI Model Zoo packaging: a bundle laid out as ``models/<bundle>`` with its trained files as large files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mixsup_monai.utils.errors import InputError, InputNotFoundError

__all__ = [
    "LARGE_FILES",
    "MODEL_INFO",
    "TRAINED_FILES_KEY",
    "ZooPackage",
    "file_md5",
    "package_for_zoo",
    "trained_files",
]

logger = logging.getLogger(__name__)

#: metadata key naming the files training writes (path inside the bundle -> what it holds).
TRAINED_FILES_KEY = "trained_files"
#: the network's weights, a plain state dict of ``network_def``: always a trained file.
MODEL_FILE = "models/model.pt"
#: the Model Zoo's list of files it downloads before checking a bundle (``ci/utils.py: download_large_files``).
LARGE_FILES = "large_files.yml"
#: the Model Zoo's record of released versions, ``{"<bundle>_v<version>": {"checksum": ..., "source": ...}}``.
MODEL_INFO = "model_info.json"
#: where the Model Zoo's metadata check looks for the schema before downloading it from the metadata's URL.
SCHEMA_FILE = "eval/schema.json"
#: the parts of a bundle folder that go into the Model Zoo (run outputs such as models/, eval/ stay behind).
BUNDLE_PARTS = ("configs", "docs", "LICENSE")


@dataclass(frozen=True)
class ZooPackage:
    """What :func:`package_for_zoo` wrote.

    Attributes:
        name: the bundle's name (its folder name).
        version: the metadata's ``version``.
        models_dir: ``<out>/models``, the Model Zoo's ``-p`` (models path).
        bundle_dir: ``<out>/models/<name>``, the packaged bundle without its trained files.
        release_dir: ``<out>/release/<name>_v<version>``, the copies the large-file URLs point at.
        large_files: the entries of ``large_files.yml`` (path, url, hash_val, hash_type).
    """

    name: str
    version: str
    models_dir: Path
    bundle_dir: Path
    release_dir: Path
    large_files: tuple[dict, ...]

    def to_dict(self) -> dict:
        """The package as JSON-ready values (paths as strings)."""
        return {
            "name": self.name,
            "version": self.version,
            "models_dir": str(self.models_dir),
            "bundle_dir": str(self.bundle_dir),
            "release_dir": str(self.release_dir),
            "large_files": [dict(entry) for entry in self.large_files],
        }


def file_md5(path: str | os.PathLike) -> str:
    """The md5 hex digest of a file (the ``hash_val`` of a ``large_files.yml`` entry with ``hash_type: md5``)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def trained_files(metadata: Mapping, where: str | os.PathLike = "metadata.json") -> list[str]:
    """The files training writes, as paths inside the bundle: ``models/model.pt`` first, then the metadata's others.

    Args:
        metadata: a bundle's ``metadata.json`` content; its ``trained_files`` maps paths to descriptions.
        where: the metadata file, named in errors.

    Raises:
        InputError: ``trained_files`` is not a mapping, or names a path outside the bundle's ``models/``.
    """
    named = metadata.get(TRAINED_FILES_KEY, {})
    if not isinstance(named, Mapping):
        raise InputError(
            f"{TRAINED_FILES_KEY} must map file paths to descriptions", where, f"got {type(named).__name__}"
        )
    files = [MODEL_FILE]
    for path in named:
        parts = PurePosixPath(path).parts
        if PurePosixPath(path).is_absolute() or len(parts) < 2 or parts[0] != "models" or ".." in parts:
            raise InputError(
                f"{TRAINED_FILES_KEY} names {path!r}", where, "expected a path inside the bundle's models/ folder"
            )
        if path not in files:
            files.append(str(PurePosixPath(path)))
    return files


def _read_metadata(bundle_dir: Path) -> dict:
    meta_file = bundle_dir / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise InputNotFoundError("bundle metadata not found", meta_file, "expected a bundle folder with configs/")
    metadata = json.loads(meta_file.read_text())
    for key in ("version", "changelog"):
        if key not in metadata:
            raise InputError(f"metadata has no {key!r}", meta_file, "the Model Zoo needs version and changelog")
    if metadata["version"] not in metadata["changelog"]:
        raise InputError(f"version {metadata['version']} has no changelog entry", meta_file, "add it to 'changelog'")
    return metadata


def _check_not_released(model_info_path: Path, name: str, version: str) -> None:
    """Create an empty ``model_info.json`` or keep the previous releases; a released version may not be reused."""
    if not model_info_path.is_file():
        model_info_path.write_text("{}\n")
        return
    released = json.loads(model_info_path.read_text())
    if f"{name}_v{version}" in released:
        raise InputError(
            f"version {version} of {name} is already released",
            model_info_path,
            "bump 'version' in configs/metadata.json and describe the change in 'changelog'",
        )


def _check_targets(bundle_dir: Path, *replaced: Path) -> None:
    """The folders packaging replaces lie outside the bundle and do not hold it."""
    for folder in replaced:
        if folder == bundle_dir or bundle_dir in folder.parents or folder in bundle_dir.parents:
            raise InputError(
                "the package would overwrite the bundle folder",
                folder,
                f"choose an out_dir whose models/ and release/ folders lie outside {bundle_dir}",
            )
    if not (bundle_dir / "LICENSE").is_file():
        raise InputNotFoundError("bundle LICENSE not found", bundle_dir / "LICENSE", "the Model Zoo requires one")


def _copy_bundle(bundle_dir: Path, target: Path) -> None:
    """The bundle's configs, docs and LICENSE into ``target`` (replaced), without caches or run outputs."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in BUNDLE_PARTS:
        source = bundle_dir / part
        if source.is_dir():
            shutil.copytree(source, target / part, ignore=ignore)
        elif source.is_file():
            shutil.copy2(source, target / part)


def _check_plain_state_dict(path: Path) -> None:
    """``model.pt`` holds tensors by parameter name: what ``ckpt_export`` loads into ``network_def`` without a key."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or one holding objects other than tensors
        raise InputError("model.pt cannot be read as a state dict", path, f"{type(e).__name__}: {e}") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = sorted(state)[:5] if isinstance(state, Mapping) else type(state).__name__
        raise InputError(
            "model.pt is not a plain state dict of network_def",
            path,
            f"got {keys}; a checkpoint with entries (e.g. 'model') is what bundles before 0.2.0 wrote: "
            "save its network entry alone (torch.save(checkpoint['model'], path)) or train again",
        )


def _release(files: list[str], weights_dir: Path, release_dir: Path) -> tuple[dict, ...]:
    """Copy each trained file into ``release_dir`` and describe it as a ``large_files.yml`` entry."""
    sources = {path: weights_dir / PurePosixPath(path).relative_to("models") for path in files}
    missing = [path for path, source in sources.items() if not source.is_file()]
    if missing:
        raise InputNotFoundError(
            f"trained file(s) {', '.join(missing)} not found",
            weights_dir,
            "train the bundle first, or pass weights_dir: the folder holding its trained files",
        )
    _check_plain_state_dict(sources[MODEL_FILE])
    if release_dir.exists():
        shutil.rmtree(release_dir)
    entries = []
    for path in files:
        copy = release_dir / PurePosixPath(path)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sources[path], copy)
        entries.append({"path": path, "url": copy.resolve().as_uri(), "hash_val": file_md5(copy), "hash_type": "md5"})
    return tuple(entries)


def _write_large_files(path: Path, entries: tuple[dict, ...]) -> None:
    """``large_files.yml`` in the Model Zoo's form; the values are JSON strings, which YAML reads unchanged."""
    lines = ["large_files:"]
    for entry in entries:
        lines.extend(
            f"{'-' if i == 0 else ' '} {key}: {json.dumps(str(value))}" for i, (key, value) in enumerate(entry.items())
        )
    path.write_text("\n".join(lines) + "\n")


def _copy_schema(schema: Path, metadata: Mapping, target: Path) -> None:
    if not schema.is_file():
        raise InputNotFoundError("schema file not found", schema, "pass a local copy of the metadata's schema")
    expected = str(metadata.get("schema", "")).rsplit("/", 1)[-1]
    if expected and schema.name != expected:
        logger.warning("schema %s is not the metadata's schema %s", schema, expected)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(schema, target)


def package_for_zoo(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    weights_dir: str | os.PathLike | None = None,
    schema: str | os.PathLike | None = None,
) -> ZooPackage:
    """Lay a bundle out as the MONAI Model Zoo checks it (``ci/verify_bundle.py -b <name> -p <out>/models``).

    Writes ``<out>/models/<name>/`` (configs, docs, LICENSE and a ``large_files.yml`` whose entries point
    ``models/model.pt`` and the metadata's other ``trained_files`` to ``file://`` URLs of release copies in
    ``<out>/release/<name>_v<version>/``, each with its md5), and ``<out>/models/model_info.json`` (kept if it
    exists: the previous releases; else empty). The trained files are not copied into the packaged bundle: the
    Model Zoo downloads them from ``large_files.yml``. Packaging several bundles into one ``out_dir`` gives one
    models path holding all of them.

    Args:
        bundle_dir: the bundle folder (``configs/metadata.json``, ``LICENSE``, ...).
        out_dir: output folder (created).
        weights_dir: folder holding the trained files as they lie in ``models/`` (default: ``<bundle_dir>/models``).
        schema: a local copy of the metadata's schema, copied to ``<name>/eval/schema.json`` so the metadata check
            downloads nothing.

    Returns:
        What was written.

    Raises:
        InputNotFoundError: the metadata, LICENSE, a trained file or the schema is missing.
        InputError: ``model.pt`` is no plain state dict, the version has no changelog entry or is already in
            ``model_info.json``, or ``out_dir`` would overwrite the bundle folder.
    """
    bundle_dir = Path(bundle_dir).expanduser().resolve()
    out = Path(out_dir).expanduser().resolve()
    metadata = _read_metadata(bundle_dir)
    name, version = bundle_dir.name, str(metadata["version"])
    files = trained_files(metadata, bundle_dir / "configs" / "metadata.json")
    models_dir, release_dir = out / "models", out / "release" / f"{name}_v{version}"
    target = models_dir / name
    _check_targets(bundle_dir, target, release_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    _check_not_released(models_dir / MODEL_INFO, name, version)
    weights = Path(weights_dir).expanduser().resolve() if weights_dir is not None else bundle_dir / "models"
    entries = _release(files, weights, release_dir)
    _copy_bundle(bundle_dir, target)
    _write_large_files(target / LARGE_FILES, entries)
    if schema is not None:
        _copy_schema(Path(schema).expanduser().resolve(), metadata, target / SCHEMA_FILE)
    logger.info("packaged %s %s for the Model Zoo in %s (large files in %s)", name, version, target, release_dir)
    return ZooPackage(name, version, models_dir, target, release_dir, entries)
