"""Utilities below every other package: ranks, atomic writes, seeds, bundle runs, command-line bools, MLflow, zoo."""

from __future__ import annotations

from mixsup_monai.utils.args import as_bool
from mixsup_monai.utils.bundle import bundle_root_from_argv, raise_no_input, run_bundle, run_dirs
from mixsup_monai.utils.distributed import barrier, is_rank0
from mixsup_monai.utils.errors import InputError, InputNotFoundError
from mixsup_monai.utils.io import load_network_weights, torch_save_atomic, write_json_atomic
from mixsup_monai.utils.seeds import round_seed
from mixsup_monai.utils.tracking import artifact_location, sqlite_tracking_uri
from mixsup_monai.utils.zoo import ZooPackage, package_for_zoo

__all__ = [
    "InputError",
    "InputNotFoundError",
    "ZooPackage",
    "artifact_location",
    "as_bool",
    "barrier",
    "bundle_root_from_argv",
    "is_rank0",
    "package_for_zoo",
    "raise_no_input",
    "round_seed",
    "run_bundle",
    "run_dirs",
    "sqlite_tracking_uri",
    "load_network_weights",
    "torch_save_atomic",
    "write_json_atomic",
]
