"""MONAI transforms of mixsup-monai: slide reading and pseudo-label rules applied to model predictions."""

from __future__ import annotations

import importlib
from typing import Any

from mixsup_monai.transforms.pseudo_labels import (
    MixSupPseudoLabel,
    MixSupPseudoLabelD,
    MixSupPseudoLabeld,
    MixSupPseudoLabelDict,
    MixSupPseudoLabelStats,
    mixsup_pseudo_label_stats,
    mixsup_pseudo_labels,
)

# Slide reading pulls in the WSI stack (readers, caches); it is imported on first use so that the
# pure-tensor pseudo-label transforms stay importable without it.
_LAZY = {
    name: "mixsup_monai.transforms.slide_io"
    for name in (
        "LoadSlideD",
        "LoadSlideDict",
        "LoadSlideRegion",
        "LoadSlideRegionD",
        "LoadSlideRegionDict",
        "LoadSlideRegiond",
        "LoadSlided",
        "crop_label_map",
    )
}

__all__ = [
    "LoadSlideD",
    "LoadSlideDict",
    "LoadSlideRegion",
    "LoadSlideRegionD",
    "LoadSlideRegionDict",
    "LoadSlideRegiond",
    "LoadSlided",
    "MixSupPseudoLabel",
    "MixSupPseudoLabelD",
    "MixSupPseudoLabelDict",
    "MixSupPseudoLabelStats",
    "MixSupPseudoLabeld",
    "crop_label_map",
    "mixsup_pseudo_label_stats",
    "mixsup_pseudo_labels",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
