"""Slide identity that does not depend on where the data lives: the key of per-slide seeds, statistics and records.

A loaded datalist holds absolute paths (:func:`~mixsup_monai.data.load_datalist` resolves them), so anything keyed
by ``slide["image"]`` changes when the cohort is copied or the repository is cloned into another folder. Per-slide
random streams (NPL's stochastic rounding), statistics keys (``pseudo/sae/<slide>``) and round records are keyed
by :func:`slide_id` instead: the stem of the slide's file, the name the demo cohorts and the README already use
(``npl_weak_000``). Two slides of one run must then have distinct stems; :func:`unique_slide_ids` checks that.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["SlideIdentities", "slide_id", "unique_slide_ids"]


def slide_id(slide: Mapping | str | os.PathLike) -> str:
    """The identity of a slide: the stem of its ``image`` file, whatever folder it lies in.

    ``/any/folder/slides/npl_weak_000.tiff`` -> ``npl_weak_000``. The same cohort copied to another folder, or a
    repository cloned elsewhere, gives the same identities, hence the same per-slide random draws.

    Args:
        slide: a datalist slide (its ``image`` is used) or a slide path.
    """
    path = slide if isinstance(slide, (str, os.PathLike)) else str(slide.get("image", "<slide>"))
    return Path(path).stem


class SlideIdentities:
    """:func:`slide_id` of slides seen one after another, refusing two different files with the same identity.

    A shared identity would silently give two slides the same random draws and overwrite one's statistics with
    the other's, so it is an error naming both files. The same file seen twice is not (the datalist checker
    reports duplicates). Use one instance per pass over a cohort (e.g. a round's predictions, streamed).
    """

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}

    def __call__(self, slide: Mapping | str | os.PathLike) -> str:
        """The slide's identity; raises ``ValueError`` when another file already has it."""
        path = str(slide if isinstance(slide, (str, os.PathLike)) else slide.get("image", "<slide>"))
        sid = slide_id(path)
        if self.paths.setdefault(sid, path) != path:
            raise ValueError(
                f"slides {self.paths[sid]!r} and {path!r} share the name {sid!r}: a slide's file name (without "
                "folder and suffix) is its identity in seeds, statistics and round records; rename one of the files"
            )
        return sid


def unique_slide_ids(slides: Iterable[Mapping | str | os.PathLike]) -> list[str]:
    """The :func:`slide_id` of each slide, refusing two different slide files with the same identity.

    Raises:
        ValueError: two different files share a stem (see :class:`SlideIdentities`).
    """
    identities = SlideIdentities()
    return [identities(slide) for slide in slides]
