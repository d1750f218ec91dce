"""Fixtures of every test, and the tiny demo cohorts the bundle and MONAI Label tests train on."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

#: slides of each task's tiny demo cohort (the fewest with which every bundle test runs: LSR needs 2 test
#: slides for its 2-rank DDP test, MixSup both classes in every split).
DEMO_SLIDES = {"lsr": 6, "mixsup": 8, "npl": 5}


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """Give the root logger back its handlers and level after each test.

    A bundle run in-process applies its ``logging.conf`` (``logging.config.fileConfig``), which adds a handler on
    the ``sys.stdout`` of that moment -- pytest's capture file of the test, closed after it. Without this, every
    later warning would print a "--- Logging error ---" traceback into the next test's output.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def demo_datalist(tmp_path_factory) -> Callable[[str], Path]:
    """``demo_datalist(task)``: the datalist of the task's tiny demo cohort (seed 0), made once per session."""
    from mixsup_monai.demo import make_demo_cohort

    made: dict[str, Path] = {}

    def make(task: str) -> Path:
        if task not in made:
            folder = tmp_path_factory.mktemp(f"demo_{task}")
            made[task] = Path(make_demo_cohort(task, folder, seed=0, n_slides=DEMO_SLIDES[task], progress=False))
        return made[task]

    return make
