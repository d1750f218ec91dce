"""Values arriving from the command line: ``python -m monai.bundle run ... --resume false`` passes a string."""

from __future__ import annotations

__all__ = ["as_bool"]

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def as_bool(value: bool | int | str, name: str = "value") -> bool:
    """``value`` as a bool, for config items a user may override on the command line.

    MONAI's bundle command line reads ``--resume False`` as the bool ``False`` but ``--resume false`` as the
    string ``"false"`` and ``--resume 0`` as the int ``0``; a config passes its item through ``as_bool`` so
    that all of them mean the same and a typo fails instead of counting as true.

    Args:
        value: a bool (returned as it is), the int 0 or 1, or one of ``true``/``false``, ``1``/``0``,
            ``yes``/``no`` (any case, surrounding spaces ignored).
        name: the config item, named in the error.

    Raises:
        ValueError: ``value`` is none of the above.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"{name} must be true or false (also 1/0, yes/no), got {value!r}")
