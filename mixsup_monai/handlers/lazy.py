"""Ignite handler wrapper that builds its handler when the engine starts, so that resolving a config writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monai.utils import min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["LazyHandler"]


class LazyHandler:
    """Build a handler on its engine's first ``STARTED`` event instead of when the bundle config is resolved.

    Some handlers write in their constructor: MONAI's ``CheckpointSaver`` creates ``save_dir`` (through
    Ignite's ``DiskSaver``) and ``MLFlowHandler`` opens its tracking store (MLflow >= 3.14 creates the SQLite
    database there). Resolving a bundle config -- as MONAI Label, ``verify_metadata`` or ``ckpt_export`` do --
    must write nothing, so such a handler is given as a component with ``"_mode_": "callable"`` (MONAI then
    resolves its arguments but returns a partial instead of an instance)::

        {
            "_target_": "mixsup_monai.handlers.LazyHandler",
            "handler": {"_target_": "CheckpointSaver", "_mode_": "callable", "save_dir": "@ckpt_dir", ...}
        }

    The handler is built once and attached to the engine from inside ``STARTED``; Ignite runs the handlers
    added to an event while that event fires, so the built handler's own ``STARTED`` callbacks (e.g.
    ``MLFlowHandler.start``) still run in that first event. Its other callbacks come after those of the
    engine's eager handlers: put lazy handlers last in a handler list to keep the list's order.

    Args:
        handler: a callable returning the handler (an object with ``attach(engine)``).
    """

    def __init__(self, handler: Callable[[], Any]) -> None:
        if not callable(handler):
            raise TypeError(f"LazyHandler needs a callable (a component with '_mode_': 'callable'), got {handler!r}")
        self.factory = handler
        self.handler: Any = None

    def attach(self, engine: Any) -> None:
        if not engine.has_event_handler(self.build, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.build)

    def build(self, engine: Any) -> Any:
        """Build the handler and attach it to ``engine`` (only on the first call); returns the handler."""
        if self.handler is None:
            self.handler = self.factory()
            self.handler.attach(engine)
        return self.handler
