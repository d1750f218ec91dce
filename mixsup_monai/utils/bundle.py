"""Helpers for bundle configs run as ``python -m monai.bundle run --config_file bundles/X/configs/train.json``."""

from __future__ import annotations

import sys
from pathlib import Path

from mixsup_monai.utils.errors import InputNotFoundError

__all__ = ["bundle_root_from_argv", "raise_no_input", "run_bundle", "run_dirs"]


def bundle_root_from_argv(default: str = ".", argv: list[str] | None = None) -> str:
    """The bundle folder of the config file named on the command line, else ``default``.

    A bundle config cannot know its own path, and Model Zoo configs assume the bundle folder is the
    working directory. Our users run bundles from the repository root, so the ``bundle_root`` of a
    config defaults to the parent of the ``configs/`` folder holding the first ``--config_file``
    given (``--bundle_root`` on the command line still overrides it).
    """
    args = sys.argv if argv is None else argv
    for i, arg in enumerate(args):
        value = None
        if arg == "--config_file" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        if value:
            first = value.strip("[]").split(",")[0].strip().strip("'\"")
            config_dir = Path(first).expanduser().resolve().parent
            return str(config_dir.parent if config_dir.name == "configs" else config_dir)
    return default


def raise_no_input(where: str, config_id: str) -> None:
    """Fail a bundle run that found no input, naming where it looked and the config ID to override."""
    # an InputNotFoundError (a FileNotFoundError): the bundle run ends with this one line, not a traceback
    raise InputNotFoundError(
        "no input slides found",
        where,
        f"pass slide paths with --{config_id} \"['/path/a.svs', ...]\" or point --dataset_dir at a folder of slides",
    )


def run_bundle(bundle_dir, config_files, workflow_type: str = "train", check_properties: bool = True, **overrides):
    """Run a bundle workflow in this process, as ``python -m monai.bundle run`` would, and return it.

    Used by the reproduction scripts and the tests to drive the bundles through their own configs.

    Args:
        bundle_dir: the bundle folder (holding ``configs/``).
        config_files: file names inside ``configs/``, later ones overriding earlier ones.
        workflow_type: ``"train"``, ``"eval"`` / ``"infer"`` (checked against MONAI's bundle properties).
        check_properties: fail when a required bundle property is missing.
        overrides: config IDs and values (``max_epochs=2``, ``datalist="..."``).

    Raises:
        ValueError: required bundle properties are missing.
    """
    from monai.bundle import ConfigWorkflow

    configs = Path(bundle_dir) / "configs"
    workflow = ConfigWorkflow(
        config_file=[
            str(configs / name) for name in ([config_files] if isinstance(config_files, str) else config_files)
        ],
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )
    workflow.initialize()
    missing = workflow.check_properties() if check_properties else None
    if missing:
        raise ValueError(f"bundle {str(bundle_dir)!r} ({config_files}): missing required properties {missing}")
    workflow.run()
    workflow.finalize()
    return workflow


def run_dirs(bundle_dir, work_dir, mlflow_dir=None, datalist=None) -> dict[str, str]:
    """Overrides that put one run of a bundle under ``work_dir``: checkpoints in ``models/``, outputs in ``eval/``.

    The config IDs every bundle of this project defines (``bundle_root``, ``ckpt_dir``, ``output_dir``,
    ``mlflow_dir`` and, when given, ``datalist``), so that tests and benchmarks run many configurations
    of one bundle side by side without resuming each other. ``mlflow_dir`` defaults to ``work_dir/mlruns``.
    """
    work = Path(work_dir)
    dirs = {
        "bundle_root": str(bundle_dir),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "mlflow_dir": str(mlflow_dir if mlflow_dir is not None else work / "mlruns"),
    }
    if datalist is not None:
        dirs["datalist"] = str(datalist)
    return dirs
