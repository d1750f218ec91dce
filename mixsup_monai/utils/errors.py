"""Input errors a user can fix, formatted as one line: ``<what> (<file / slide / key>): <what was expected / fix>``."""

from __future__ import annotations

import os

__all__ = ["InputError", "InputNotFoundError", "one_line"]


def one_line(text: str) -> str:
    """``text`` on one line: its non-empty lines stripped and joined with ``"; "``."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


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
        self.what = one_line(what)
        self.where = one_line(os.fspath(where)) if where != "" else ""
        self.fix = one_line(fix)
        super().__init__(self.what, self.where, self.fix)

    def __str__(self) -> str:
        where = f" ({self.where})" if self.where else ""
        fix = f": {self.fix}" if self.fix else ""
        return f"{self.what}{where}{fix}"

    def __reduce__(self):  # picklable across DataLoader workers with its three fields
        return type(self), (self.what, self.where, self.fix)


class InputNotFoundError(InputError, FileNotFoundError):
    """An :class:`InputError` for a path that does not exist; also a ``FileNotFoundError`` (an ``OSError``)."""

    def __init__(self, what: str, where: str | os.PathLike = "", fix: str = ""):
        super().__init__(what, where, fix)
        self.filename = self.where or None
