"""One line for bad input, shared by the command line and the bundles: the chain of a wrapped error is walked, each
kind of error gets its line, and the bundles' ``sys.excepthook`` prints only that line (``--debug`` / env: traceback).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mixsup_monai.data.datalist import DatalistError, DatalistProblem
from mixsup_monai.utils.errors import (
    DEBUG_ENV,
    InputError,
    InputNotFoundError,
    error_chain,
    error_line,
    reported_error,
)

REPO = Path(__file__).resolve().parents[2]
ERRORS_PY = REPO / "mixsup_monai" / "utils" / "errors.py"
HINT = f"rerun with --debug (or {DEBUG_ENV}=1) for the traceback"
DISK_FULL_FIX = "free disk space and resume the run (--resume true); finished rounds are kept"


def _raised(make):
    """The exception ``make()`` raises, with its ``__cause__`` / ``__context__`` set by real ``raise`` statements."""
    try:
        make()
    except BaseException as e:  # noqa: BLE001 - the tests look at what was raised
        return e
    raise AssertionError("nothing raised")


def _monai_wrapped(error: BaseException) -> BaseException:
    """``error`` wrapped as MONAI wraps a failing config item: ``RuntimeError`` from ``RuntimeError`` from it."""

    def evaluate():
        try:
            raise error
        except BaseException as e:
            raise RuntimeError("Failed to evaluate $@loaded_datalist") from e

    def instantiate():
        try:
            evaluate()
        except RuntimeError as e:
            raise RuntimeError("Failed to instantiate {'_target_': 'RoundRunner'}") from e

    return _raised(instantiate)


def _datalist_error(file: str = "/d/dl.json") -> DatalistError:
    return DatalistError(
        [
            DatalistProblem(file, "training[0]", "image", "file does not exist", "/d/gone.tif"),
            DatalistProblem(file, "training[1]", "label", "slide label 3 out of range"),
        ]
    )


# ---------------------------------------------------------------- the chain
def test_chain_follows_cause_then_context_and_respects_from_none():
    inner = ValueError("inner")
    wrapped = _raised(lambda: _raise_from(RuntimeError("outer"), inner))
    assert error_chain(wrapped) == [wrapped, inner]

    def during():
        try:
            raise KeyError("first")
        except KeyError:
            raise TypeError("while handling") from None

    suppressed = _raised(during)
    assert error_chain(suppressed) == [suppressed]  # `from None` hides the context, as tracebacks do

    def implicit():
        try:
            raise KeyError("first")
        except KeyError:
            raise TypeError("while handling")  # noqa: B904 - an implicit context is what is tested

    context = _raised(implicit)
    assert [type(e) for e in error_chain(context)] == [TypeError, KeyError]
    loop_a, loop_b = ValueError("a"), ValueError("b")
    loop_a.__cause__, loop_b.__cause__ = loop_b, loop_a
    assert error_chain(loop_a) == [loop_a, loop_b]  # a looping chain ends


def _raise_from(outer: BaseException, inner: BaseException):
    raise outer from inner


def test_the_innermost_input_error_is_reported_through_monai_wrappers():
    inner = InputNotFoundError("slide not found", "/d/a.svs", "this path does not exist")
    outer = InputError("slide cannot be used", "/d/a.svs", "see above")
    chained = _raised(lambda: _raise_from(outer, inner))
    wrapped = _monai_wrapped(chained)
    assert reported_error(wrapped) is inner
    assert error_line(wrapped) == "error: slide not found (/d/a.svs): this path does not exist"
    # an InputError raised from an OSError: the InputError's line, not the OSError's
    from_os = _raised(
        lambda: _raise_from(InputError("slide is unreadable", "/d/b.svs", "re-export it"), OSError(5, "x"))
    )
    assert error_line(_monai_wrapped(from_os)) == "error: slide is unreadable (/d/b.svs): re-export it"
    assert reported_error(_monai_wrapped(KeyError("k"))) is None


# ---------------------------------------------------------------- one line per kind of error
def test_datalist_error_line_names_the_first_problem_and_the_checker():
    expected = (
        "error: datalist has 2 problem(s) (/d/dl.json): the first is training[0] (/d/gone.tif) key 'image': file "
        "does not exist; list them all with `python -m mixsup_monai check-datalist /d/dl.json`"
    )
    assert error_line(_datalist_error()) == expected
    assert error_line(_monai_wrapped(_datalist_error())) == expected  # raised while MONAI resolved the config


@pytest.mark.parametrize("command", ["", "slide-info"])
def test_os_error_lines(command):
    missing = OSError(errno.ENOENT, "No such file or directory", "/d/x.json")
    assert error_line(_monai_wrapped(missing), command) == (
        f"error: no such file or directory (/d/x.json): check the path and its permissions; {HINT}"
    )
    renamed = OSError(errno.EACCES, "Permission denied", "/d/a", None, "/d/b")
    assert (
        error_line(renamed, command)
        == f"error: permission denied (/d/a -> /d/b): check the path and its permissions; {HINT}"
    )
    full = OSError(errno.ENOSPC, "No space left on device", "/ckpt/rounds/round_02.pt")
    fix = "free disk space and run the command again" if command else DISK_FULL_FIX
    assert (
        error_line(_monai_wrapped(full), command) == f"error: no space left on device (/ckpt/rounds/round_02.pt): {fix}"
    )
    nameless = OSError(errno.ENOSPC, "No space left on device")
    where = f" ({command})" if command else ""
    assert error_line(nameless, command) == f"error: no space left on device{where}: {fix}"


def test_unexpected_errors_name_the_cause_not_monais_wrapper():
    assert error_line(_monai_wrapped(KeyError("classes"))) == f"error: KeyError: 'classes': unexpected failure; {HINT}"
    assert error_line(ZeroDivisionError(), "tissue") == f"error: ZeroDivisionError (tissue): unexpected failure; {HINT}"
    # a cause that is not MONAI's wrapper keeps the outer message, as the command line always did
    assert error_line(_raised(lambda: _raise_from(ValueError("bad x"), KeyError("k")))) == (
        f"error: ValueError: bad x: unexpected failure; {HINT}"
    )


def test_an_input_error_from_a_dataloader_worker_keeps_its_line():
    from torch.utils.data import DataLoader, Dataset

    class Gone(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            raise InputNotFoundError("slide not found", "/d/a.tif", "restore it")

    # torch re-raises a worker's error as type(error)(<traceback text>); the main process gets one line back
    loader = DataLoader(Gone(), num_workers=1, multiprocessing_context="fork" if os.name == "posix" else None)
    with pytest.raises(InputNotFoundError) as raised:
        next(iter(loader))
    assert str(raised.value) == "slide not found (/d/a.tif): restore it"
    assert error_line(_monai_wrapped(raised.value)) == "error: slide not found (/d/a.tif): restore it"
    if sys.version_info >= (3, 11):  # the worker's traceback is a note, shown by --debug
        assert "Original Traceback" in raised.value.__notes__[0] and "__getitem__" in raised.value.__notes__[0]
    assert torch.utils.data.get_worker_info() is None


# ---------------------------------------------------------------- the excepthook, in a real interpreter
def _hook_run(tmp_path: Path, body: str, debug_env: str | None = None, args: tuple[str, ...] = ()):
    # errors.py is loaded on its own: importing mixsup_monai.utils would import torch (seconds per process)
    script = tmp_path / "hooked.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import importlib.util, sys
            spec = importlib.util.spec_from_file_location("errors", {str(ERRORS_PY)!r})
            errors = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(errors)
            errors.install_one_line_errors()
            errors.install_one_line_errors()  # a second call does nothing
            print("written before the failure")
            """
        )
        + textwrap.dedent(body)
    )
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    if debug_env is not None:
        env[DEBUG_ENV] = debug_env
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path
    )


WRAPPED_INPUT_ERROR = """
try:
    raise errors.InputNotFoundError("datalist not found", "/d/none.json", "pass one with --datalist")
except Exception as e:
    raise RuntimeError("Failed to evaluate $ensure_demo_cohort(...)") from e
"""


def test_excepthook_prints_one_line_for_input_errors(tmp_path):
    result = _hook_run(tmp_path, WRAPPED_INPUT_ERROR)
    assert result.returncode == 1
    assert result.stderr == "error: datalist not found (/d/none.json): pass one with --datalist\n"
    assert result.stdout == "written before the failure\n"
    full = _hook_run(tmp_path, "raise OSError(28, 'No space left on device', '/ckpt/rounds.json')\n")
    assert (
        full.returncode == 1 and full.stderr == f"error: no space left on device (/ckpt/rounds.json): {DISK_FULL_FIX}\n"
    )


@pytest.mark.parametrize("how", ["env", "flag"])
def test_excepthook_shows_the_traceback_when_debugging(tmp_path, how):
    result = _hook_run(
        tmp_path, WRAPPED_INPUT_ERROR, **({"debug_env": "1"} if how == "env" else {"args": ("--debug",)})
    )
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "errors.InputNotFoundError: datalist not found (/d/none.json)" in result.stderr
    assert not result.stderr.startswith("error:")


def test_excepthook_keeps_the_traceback_of_unexpected_errors(tmp_path):
    result = _hook_run(tmp_path, "{}['classes']\n")
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last)")
    assert result.stderr.splitlines()[-2:] == [
        "KeyError: 'classes'",
        f"error: KeyError: 'classes': unexpected failure; {HINT}",
    ]
    interrupted = _hook_run(tmp_path, "raise KeyboardInterrupt\n")
    assert interrupted.returncode != 0 and interrupted.stderr.splitlines()[-1] == "KeyboardInterrupt"


# ---------------------------------------------------------------- a real bundle run
def test_bundle_run_with_a_missing_slide_prints_one_line(tmp_path):
    datalist = tmp_path / "dl.json"
    datalist.write_text(
        json.dumps({"task": "lsr", "classes": ["normal", "tumour"], "training": [{"image": "gone.tif"}]})
    )
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable,
        # MONAI warns on stderr that a config file runs code, before any bundle code runs: not ours to silence
        "-W",
        "ignore:parsing config_file",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(REPO / "bundles" / "lsr" / "configs" / "train.json"),
        "--bundle_root",
        str(tmp_path / "bundle"),
        "--datalist",
        str(datalist),
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        f"error: datalist has 1 problem(s) ({datalist}): the first is training[0] ({tmp_path / 'gone.tif'}) key "
        f"'image': file does not exist; list them all with `python -m mixsup_monai check-datalist {datalist}`\n"
    )
    assert not (tmp_path / "bundle" / "models").exists()  # nothing was written before the check
