"""Per-process cache of open slides: readers do not pickle and file handles break across forked workers."""

from __future__ import annotations

import os
from collections import OrderedDict

from mixsup_monai.wsi.reader import DEFAULT_BACKENDS

__all__ = ["SlideCache", "get_slide"]


class SlideCache:
    """Keeps up to ``max_open`` slides open, keyed by ``(path, mpp)``, and forgets them after a fork.

    DataLoader workers are forked from the main process; a handle opened there must not be used in
    a worker, so the cache is emptied whenever it sees a new process id.
    """

    def __init__(self, max_open: int = 32, backends: tuple[str, ...] = DEFAULT_BACKENDS):
        self.max_open = max_open
        self.backends = backends
        self._pid = os.getpid()
        self._slides: OrderedDict = OrderedDict()

    def get(self, path: str, mpp: float | None = None):
        from mixsup_monai.wsi.reader import open_slide

        if os.getpid() != self._pid:
            self._slides = OrderedDict()  # inherited handles belong to the parent process
            self._pid = os.getpid()
        key = (str(path), mpp)
        slide = self._slides.get(key)
        if slide is None:
            slide = open_slide(path, mpp=mpp, backends=self.backends)
            self._slides[key] = slide
            while len(self._slides) > self.max_open:
                _, old = self._slides.popitem(last=False)
                old.close()
        else:
            self._slides.move_to_end(key)
        return slide

    def clear(self) -> None:
        for slide in self._slides.values():
            slide.close()
        self._slides.clear()


_default_cache = SlideCache()


def get_slide(path: str, mpp: float | None = None):
    """The open :class:`~mixsup_monai.wsi.reader.Slide` for ``path`` from this process's default cache."""
    return _default_cache.get(path, mpp)
