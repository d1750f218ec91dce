"""Rounds of weakly-supervised training: E-step predictor, pseudo-label rules and store, pools, round runner.

Where a round starts and ends: :class:`RoundRunner` (``runner.py``). Where pseudo labels are made:
``rules.py`` (:class:`MixSupRule`, ...), stored per round by :class:`PseudoLabelStore` (``store.py``).
"""

from __future__ import annotations

from mixsup_monai.rounds.pools import PoolBatchSampler, PoolDataset
from mixsup_monai.rounds.predict import Activation, PatchScore, SlidePatchPredictor, SlidePrediction, stitch_patch_maps
from mixsup_monai.rounds.rules import MixSupRule, TopKMILRule, slide_label_of, training_item
from mixsup_monai.rounds.runner import STATE_FILE, RoundEvents, RoundRunner, round_seed
from mixsup_monai.rounds.store import (
    PseudoLabelPool,
    PseudoLabelSet,
    PseudoLabelStore,
    is_rank0,
    torch_save_atomic,
    write_json_atomic,
)

__all__ = [
    "STATE_FILE",
    "Activation",
    "MixSupRule",
    "PatchScore",
    "PoolBatchSampler",
    "PoolDataset",
    "PseudoLabelPool",
    "PseudoLabelSet",
    "PseudoLabelStore",
    "RoundEvents",
    "RoundRunner",
    "SlidePatchPredictor",
    "SlidePrediction",
    "TopKMILRule",
    "is_rank0",
    "round_seed",
    "slide_label_of",
    "stitch_patch_maps",
    "torch_save_atomic",
    "training_item",
    "write_json_atomic",
]
