"""Seeds derived from a run's seed: independent random streams per round."""

from __future__ import annotations

import numpy as np

__all__ = ["round_seed"]


def round_seed(seed: int, round_index: int) -> int:
    """The seed of round ``round_index`` of a run seeded ``seed`` (independent streams per round)."""
    state = np.random.SeedSequence([int(seed), int(round_index)]).generate_state(1, dtype=np.uint32)[0]
    return int(state) % (2**31 - 1)
