"""MONAI transforms of mixsup-monai: slide reading and pseudo-label rules applied to model predictions."""

from __future__ import annotations

from mixsup_monai.transforms.pseudo_labels import (
    MixSupPseudoLabel,
    MixSupPseudoLabelD,
    MixSupPseudoLabeld,
    MixSupPseudoLabelDict,
    MixSupPseudoLabelStats,
    mixsup_pseudo_label_stats,
    mixsup_pseudo_labels,
)
from mixsup_monai.transforms.slide_io import (
    LoadSlideD,
    LoadSlided,
    LoadSlideDict,
    LoadSlideRegion,
    LoadSlideRegionD,
    LoadSlideRegiond,
    LoadSlideRegionDict,
    crop_label_map,
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
    "MixSupPseudoLabel",
    "MixSupPseudoLabelD",
    "MixSupPseudoLabelDict",
    "MixSupPseudoLabelStats",
    "MixSupPseudoLabeld",
    "RestrictToTissueD",
    "RestrictToTissueDict",
    "RestrictToTissued",
    "crop_label_map",
    "mixsup_pseudo_label_stats",
    "mixsup_pseudo_labels",
    "tissue_region",
]
