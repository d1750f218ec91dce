"""Rounds of weakly-supervised training: E-step predictor, pseudo-label store, pools, resumable round runner.

Where a round starts and ends: :class:`RoundRunner` (``runner.py``); what a resume reads back:
:class:`RoundCheckpoints` (``state.py``). Pseudo labels are made by a method's rule
(``mixsup_monai.methods.<method>.rules`` / ``rule``) and stored per round by :class:`PseudoLabelStore`."""

from __future__ import annotations

from mixsup_monai.rounds.pools import PoolBatchSampler, PoolDataset
from mixsup_monai.rounds.predict import (
    Activation,
    PatchScore,
    SlidePatchPredictor,
    SlidePrediction,
    stitch_patch_maps,
    training_item,
)
from mixsup_monai.rounds.runner import RoundEvents, RoundRunner
from mixsup_monai.rounds.state import STATE_FILE, RoundCheckpoints
from mixsup_monai.rounds.store import PseudoLabelPool, PseudoLabelSet, PseudoLabelStore

__all__ = [
    "Activation",
    "PatchScore",
    "PoolBatchSampler",
    "PoolDataset",
    "PseudoLabelPool",
    "PseudoLabelSet",
    "PseudoLabelStore",
    "RoundCheckpoints",
    "RoundEvents",
    "RoundRunner",
    "STATE_FILE",
    "SlidePatchPredictor",
    "SlidePrediction",
    "stitch_patch_maps",
    "training_item",
]
