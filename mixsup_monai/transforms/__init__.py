"""MONAI transforms: slide regions (with context), whole slides, tiles; stain jitter; tissue; tile labels, contours."""

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
from mixsup_monai.transforms.stain import RandHEDJitterD, RandHEDJitterd, RandHEDJitterDict
from mixsup_monai.transforms.tile_io import LoadTileD, LoadTiled, LoadTileDict
from mixsup_monai.transforms.tile_label import (
    MonaiLabelOutputD,
    MonaiLabelOutputd,
    MonaiLabelOutputDict,
    TileContoursD,
    TileContoursd,
    TileContoursDict,
    TileLabelD,
    TileLabeld,
    TileLabelDict,
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
    "LoadTileD",
    "LoadTileDict",
    "LoadTiled",
    "MonaiLabelOutputD",
    "MonaiLabelOutputDict",
    "MonaiLabelOutputd",
    "RandHEDJitterD",
    "RandHEDJitterDict",
    "RandHEDJitterd",
    "RestrictToTissueD",
    "RestrictToTissueDict",
    "RestrictToTissued",
    "TileContoursD",
    "TileContoursDict",
    "TileContoursd",
    "TileLabelD",
    "TileLabelDict",
    "TileLabeld",
    "tissue_region",
]
