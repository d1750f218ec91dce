"""Ignite handler telling a batch sampler which epoch starts (shuffling per epoch, identical on every rank)."""

from __future__ import annotations

from monai.utils import min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["SamplerEpochSetter"]


class SamplerEpochSetter:
    """Call ``sampler.set_epoch(epoch)`` at every epoch start.

    MONAI's workflows do this only for ``DistributedSampler`` given as ``sampler``; our batch samplers
    (grouped, ratio-mixing) are passed as ``batch_sampler`` and need the same to reshuffle per epoch.
    """

    def __init__(self, sampler):
        if not hasattr(sampler, "set_epoch"):
            raise TypeError(f"SamplerEpochSetter: {type(sampler).__name__} has no set_epoch(epoch) method")
        self.sampler = sampler

    def attach(self, engine) -> None:
        if not engine.has_event_handler(self.epoch_started, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)

    def epoch_started(self, engine) -> None:
        self.sampler.set_epoch(engine.state.epoch)
