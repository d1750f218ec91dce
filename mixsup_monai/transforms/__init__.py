"""MONAI transforms: reading slide regions (with context) and whole slides, restricting maps to tissue."""

from __future__ import annotations

from mixsup_monai.transforms.slide_io import (
    LoadSlideD,
    LoadSlided,
    LoadSlideDict,
    LoadSlideRegion,
    LoadSlideRegionD,
    LoadSlideRegiond,
    LoadSlideRegionDict,
)
from mixsup_monai.transforms.tissue import RestrictToTissueD, RestrictToTissued, RestrictToTissueDict, tissue_region

__all__ = [
    "LoadSlideD",
    "LoadSlideDict",
    "LoadSlideRegion",
    "LoadSlideRegionD",
    "LoadSlideRegionDict",
    "LoadSlideRegiond",
    "LoadSlided",
    "RestrictToTissueD",
    "RestrictToTissueDict",
    "RestrictToTissued",
    "tissue_region",
]
