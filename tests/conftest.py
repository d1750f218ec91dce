"""Fixtures of every test."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


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
