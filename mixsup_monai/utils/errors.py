"""Input errors a user can fix, formatted as one line: ``<what> (<file / slide / key>): <what was expected / fix>``.

Both front ends print the same line, :func:`error_line`: the command line (``python -m mixsup_monai``) for any
failure, a bundle run (``python -m monai.bundle run``) through the ``sys.excepthook`` that
:func:`install_one_line_errors` installs (the first item of every bundle's ``setup``). ``--debug`` on the command
line, or the environment variable ``MIXSUP_MONAI_DEBUG=1``, shows the traceback instead.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from types import TracebackType

__all__ = [
    "DEBUG_ENV",
    "InputError",
    "InputNotFoundError",
    "debug_requested",
    "error_chain",
    "error_line",
    "install_one_line_errors",
    "one_line",
    "reported_error",
]

#: environment variable that makes a failing command or bundle run show its traceback (like ``--debug``).
DEBUG_ENV = "MIXSUP_MONAI_DEBUG"
#: errno values of a full disk (``ENOSPC``) or an exhausted quota (``EDQUOT``), reported as "no space left".
_DISK_FULL = frozenset(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None)
_DISK_FULL_FIX_RUN = "free disk space and resume the run (--resume true); finished rounds are kept"
_DISK_FULL_FIX_COMMAND = "free disk space and run the command again"
_TRACEBACK_HINT = f"rerun with --debug (or {DEBUG_ENV}=1) for the traceback"


def one_line(text: str) -> str:
    """``text`` on one line: its non-empty lines stripped and joined with ``"; "``."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _is_worker_reraise(text: str) -> bool:
    # torch.utils.data's ExceptionWrapper.reraise: "Caught <Type> in DataLoader worker process <n>.\nOriginal ..."
    return text.startswith("Caught ") and "\nOriginal Traceback (most recent call last):" in text


def _worker_error_text(text: str) -> str:
    """The worker error's own message: the last line of its traceback, ``<module>.<Type>: <message>``."""
    last = [line for line in text.splitlines() if line.strip()][-1]
    _, sep, message = last.partition(": ")
    return message if sep else last


class InputError(ValueError):
    """A bad input (file, slide, datalist key) reported so that the user can fix it without a traceback.

    ``str(error)`` is ``"<what> (<where>): <fix>"``; the command line prints it as ``error: ...`` and exits 1.
    It is a ``ValueError``, so callers that catch ``ValueError`` for bad arguments keep working.

    Args:
        what: what is wrong, e.g. ``"slide not found"``.
        where: the file, slide or key it is about (a path is printed as given).
        fix: what was expected, or how to fix it.

    Example:
        >>> str(InputError("datalist is not valid JSON", "dl.json", "expecting ',' delimiter at line 3, column 5"))
        "datalist is not valid JSON (dl.json): expecting ',' delimiter at line 3, column 5"
    """

    def __init__(self, what: str, where: str | os.PathLike = "", fix: str = ""):
        worker_traceback = None
        if where == "" and fix == "" and _is_worker_reraise(what):
            # torch re-raises a DataLoader worker's error as type(error)(its traceback text): keep the one line
            worker_traceback, what = what, _worker_error_text(what)
        self.what = one_line(what)
        self.where = one_line(os.fspath(where)) if where != "" else ""
        self.fix = one_line(fix)
        super().__init__(self.what, self.where, self.fix)
        if worker_traceback is not None and hasattr(self, "add_note"):  # Python >= 3.11: shown by --debug
            self.add_note(worker_traceback)

    def __str__(self) -> str:
        where = f" ({self.where})" if self.where else ""
        fix = f": {self.fix}" if self.fix else ""
        return f"{self.what}{where}{fix}"

    def __reduce__(self):  # picklable across DataLoader workers with its three fields
        return type(self), (self.what, self.where, self.fix)

    def summary_line(self) -> str:
        """The one line :func:`error_line` prints after ``error: `` (``str(self)``)."""
        return str(self)


class InputNotFoundError(InputError, FileNotFoundError):
    """An :class:`InputError` for a path that does not exist; also a ``FileNotFoundError`` (an ``OSError``)."""

    def __init__(self, what: str, where: str | os.PathLike = "", fix: str = ""):
        super().__init__(what, where, fix)
        self.filename = self.where or None


def debug_requested(args: Sequence[str] | None = None) -> bool:
    """True if ``--debug`` is in ``args`` (default: ``sys.argv``) or :data:`DEBUG_ENV` is set to a true value."""
    args = sys.argv if args is None else args
    return "--debug" in args or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def error_chain(error: BaseException) -> list[BaseException]:
    """``error`` and the errors it was raised from or while handling, outermost first.

    Follows ``__cause__`` (``raise ... from e``; MONAI wraps every failure of a config item in a ``RuntimeError``
    this way), else ``__context__`` unless it was suppressed (``raise ... from None``), as tracebacks do.
    """
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):  # a chain can loop
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain


def _has_summary(error: BaseException) -> bool:
    # InputError and the data package's DatalistError (duck-typed: utils imports nothing above it)
    return callable(getattr(error, "summary_line", None))


def reported_error(error: BaseException) -> BaseException | None:
    """The error of ``error``'s chain that the user can act on, or ``None`` for an unexpected failure.

    The innermost error with a one-line summary (:class:`InputError`, ``DatalistError``), else the innermost
    ``OSError`` that names a file (a file the user gave or a disk that filled up).
    """
    chain = error_chain(error)
    for candidate in reversed(chain):
        if _has_summary(candidate):
            return candidate
    for candidate in reversed(chain):
        if isinstance(candidate, OSError) and candidate.filename is not None:
            return candidate
    return None


def _os_error_line(error: OSError, command: str) -> str:
    file = os.fspath(error.filename)
    if error.filename2 is not None:
        file = f"{file} -> {os.fspath(error.filename2)}"
    if error.errno in _DISK_FULL:
        return f"error: no space left on device ({file}): {_DISK_FULL_FIX_COMMAND if command else _DISK_FULL_FIX_RUN}"
    what = one_line(error.strerror or type(error).__name__)
    return f"error: {what[:1].lower()}{what[1:]} ({file}): check the path and its permissions; {_TRACEBACK_HINT}"


def error_line(error: BaseException, command: str = "") -> str:
    """The one line a failed command or bundle run prints: ``error: <what> (<where>): <fix>``.

    The line of the error the user can act on (see :func:`reported_error`), found through the whole chain of
    ``error``; an unexpected failure gets ``error: <type>: <message> (<command>): unexpected failure; ...`` with
    the message of the first error of the chain that is not MONAI's ``RuntimeError`` wrapper of a config item.

    Args:
        error: what the command or run raised.
        command: the command's name (the ``where`` of an unexpected failure); ``""`` for a bundle run.

    Example:
        >>> try:
        ...     try:
        ...         raise InputNotFoundError("slide not found", "a.svs", "check its spelling")
        ...     except InputError as e:
        ...         raise RuntimeError("Failed to evaluate $...") from e
        ... except RuntimeError as e:
        ...     error_line(e)
        'error: slide not found (a.svs): check its spelling'
    """
    found = reported_error(error)
    if found is not None and _has_summary(found):
        return f"error: {one_line(found.summary_line())}"
    if isinstance(found, OSError):
        return _os_error_line(found, command)
    while type(error) is RuntimeError and error.__cause__ is not None:  # MONAI's "Failed to evaluate ..." wrapper
        error = error.__cause__
    where = f" ({command})" if command else ""
    if isinstance(error, OSError) and error.errno in _DISK_FULL:
        return f"error: no space left on device{where}: {_DISK_FULL_FIX_COMMAND if command else _DISK_FULL_FIX_RUN}"
    if isinstance(error, OSError) and str(error):  # a file the user named; its message says which
        return f"error: {one_line(str(error))}{where}: check the path and its permissions; {_TRACEBACK_HINT}"
    what = f"{type(error).__name__}: {one_line(str(error))}" if str(error) else type(error).__name__
    return f"error: {what}{where}: unexpected failure; {_TRACEBACK_HINT}"


def _one_line_excepthook(
    exc_type: type[BaseException], error: BaseException, traceback: TracebackType | None, previous
) -> None:
    if debug_requested() or not isinstance(error, Exception):  # KeyboardInterrupt: the usual traceback
        previous(exc_type, error, traceback)
        return
    if reported_error(error) is None:  # unexpected: the traceback is needed, the line sums it up at the end
        previous(exc_type, error, traceback)
    sys.stdout.flush()  # what the run printed comes first
    print(error_line(error), file=sys.stderr, flush=True)


def install_one_line_errors() -> bool:
    """Make an uncaught bad-input error end the process with one line on stderr instead of a traceback.

    Installs a ``sys.excepthook`` (once; a second call does nothing): an uncaught exception whose chain holds an
    :class:`InputError`, a ``DatalistError`` or an ``OSError`` naming a file prints only :func:`error_line`
    (``error: <what> (<where>): <fix>``); any other exception prints its traceback followed by that line. The
    interpreter still exits with status 1. With ``--debug`` on the command line or ``MIXSUP_MONAI_DEBUG=1`` the
    traceback is printed as usual. Every bundle's ``setup`` calls it first, so that errors raised in
    ``initialize`` (e.g. a ``--datalist`` that does not exist) and in ``run`` are covered; errors MONAI raises
    before ``initialize`` (a config file that does not parse) keep their traceback.

    Returns:
        ``True`` (a config expression's value).
    """
    if getattr(sys.excepthook, "mixsup_one_line_errors", False):
        return True
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        _one_line_excepthook(exc_type, error, traceback, previous)

    hook.mixsup_one_line_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook
    return True
