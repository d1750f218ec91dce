"""Small utilities shared by the library and the bundles."""

from __future__ import annotations

from mixsup_monai.utils.bundle import bundle_root_from_argv, raise_no_input, run_bundle, run_dirs
from mixsup_monai.utils.tracking import artifact_location, sqlite_tracking_uri

__all__ = [
    "artifact_location",
    "bundle_root_from_argv",
    "raise_no_input",
    "run_bundle",
    "run_dirs",
    "sqlite_tracking_uri",
]
