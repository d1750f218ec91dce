"""The bundles' ``initialize`` step that makes the demo cohort when a run uses it (config parsing writes nothing)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from mixsup_monai.demo.cohorts import make_demo_cohort
from mixsup_monai.utils.distributed import barrier, is_rank0
from mixsup_monai.utils.errors import InputError, InputNotFoundError

__all__ = ["ensure_demo_cohort", "warn_if_demo_joins_annotations"]

logger = logging.getLogger(__name__)


def ensure_demo_cohort(task: str, datalist: str | os.PathLike, demo_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Make sure ``datalist`` exists, writing the demo cohort first when ``datalist`` is the demo's.

    A bundle's ``datalist`` defaults to ``demo_dir/datalist.json``; its ``initialize`` calls this function so
    that the first ``python -m monai.bundle run`` trains on the demo, while resolving the config (MONAI Label,
    ``verify_*``, ``ckpt_export``) writes nothing. For the demo's datalist this is
    ``make_demo_cohort(task, demo_dir, seed=seed)``, which returns at once when the cohort already holds that
    task, seed and generator version (and writes it again otherwise). In a distributed run rank 0 writes it
    while the other ranks wait.

    Args:
        task: ``"mixsup"``, ``"lsr"`` or ``"npl"``.
        datalist: the run's datalist (the demo's, or the user's).
        demo_dir: folder of the demo cohort.
        seed: seed of the demo cohort.

    Returns:
        ``datalist`` as a path.

    Raises:
        InputNotFoundError: ``datalist`` is not the demo's and does not exist (a ``FileNotFoundError``).
        InputError: ``datalist`` is a folder.
    """
    path = Path(datalist)
    demo_datalist = Path(demo_dir) / "datalist.json"
    if path.expanduser().resolve() == demo_datalist.expanduser().resolve():
        if is_rank0():
            make_demo_cohort(task, demo_dir, seed=seed)
        barrier()
        return path
    if not path.is_file():
        where = path.expanduser().resolve()
        fix = (
            "pass an existing datalist JSON with --datalist (`python -m mixsup_monai check-datalist <file>` checks "
            f"one), or leave --datalist unset to train on the demo cohort ({demo_datalist})"
        )
        if where.is_dir():
            raise InputError("datalist is a folder", where, f"expected a JSON file; {fix}")
        raise InputNotFoundError("datalist not found", where, f"this path does not exist; {fix}")
    return path


def warn_if_demo_joins_annotations(
    datalist: str | os.PathLike, demo_dir: str | os.PathLike, annotations: Sequence[object] | None
) -> bool:
    """Warn when labelled tiles (MONAI Label's ``train#dataset#data``) are about to join the *demo* cohort.

    A served bundle trains its annotations together with the weak labels of its ``datalist``, which defaults to
    the embedded synthetic demo: right for trying the server, wrong for a real cohort. Returns whether it warned.
    """
    demo = (Path(demo_dir) / "datalist.json").expanduser().resolve()
    if not annotations or Path(datalist).expanduser().resolve() != demo:
        return False
    logger.warning(
        "training %d labelled tile(s) together with the embedded synthetic demo cohort (%s): set 'datalist' in "
        "the served bundle's configs/train.json to your cohort's datalist for real use",
        len(annotations),
        demo,
    )
    return True
