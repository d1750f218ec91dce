"""Labelled tiles (MONAI Label's datastore) as LSR's limited high-resolution labels ("LSR & high res").

A labelled tile is cut into blocks of the network's input size at its resolution. Each block trains twice: with
the pixel cross-entropy of its labels (``high_res_weight`` of :class:`LabelSuperResolutionLoss`) and, like every
block, with the LSR term of a low-resolution label z -- the z of the p(c | z) table under which the block's
labelled class fractions are most likely, so that the block joins the same-z groups of the weak blocks.
:class:`HighResPrepareBatch` hands both targets to the loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.engines import default_prepare_batch

from mixsup_monai.data.annotations import labelled_patches
from mixsup_monai.data.label_stats import LabelStatsTable

__all__ = ["HIGH_RES_KEY", "PIXEL_LABELS_KEY", "HighResPrepareBatch", "annotation_blocks", "most_likely_z"]

#: item key of a block's pixel-label map (not ``mask``: the datalist's masks are evaluation truth, never trained on)
PIXEL_LABELS_KEY = "pixel_labels"
#: batch key of the blocks' ``(B, 1, H, W)`` pixel targets (255 where unlabelled)
HIGH_RES_KEY = "high_res"
#: a table std below this is taken as this: a row with std 0 would make every other fraction impossible
_MIN_STD = 0.02


def most_likely_z(fractions: np.ndarray, table: LabelStatsTable) -> int:
    """The z whose row of ``table`` makes the class fractions most likely (independent Gaussians per class).

    Args:
        fractions: ``(L,)`` class fractions of a block (summing to 1).
        table: the p(c | z) table, ``mean`` / ``std`` of shape ``(Z, L)``.
    """
    std = np.maximum(np.asarray(table.std, dtype=np.float64), _MIN_STD)
    mean = np.asarray(table.mean, dtype=np.float64)
    log_lik = -(((fractions[None, :] - mean) / std) ** 2).sum(axis=1) / 2 - np.log(std).sum(axis=1)
    return int(table.z_values[int(np.argmax(log_lik))])


def annotation_blocks(
    records: Sequence[Mapping],
    block_size: int,
    mpp: float,
    label_stats: LabelStatsTable,
    input_mpp: float = 1.0,
    min_labelled: float = 0.5,
) -> list[dict]:
    """Blocks of labelled tiles for LSR's training set, each with its pixel labels and its most likely z.

    Args:
        records: MONAI Label records ``{"image", "label"}`` (:func:`~mixsup_monai.data.annotated_tiles`).
        block_size: block edge in network pixels (``block_input_size``).
        mpp: microns per pixel the network trains at.
        label_stats: the p(c | z) table of the datalist (its classes are the label values).
        input_mpp: microns per pixel of tiles whose file does not state it.
        min_labelled: blocks with a smaller labelled share are dropped.

    Returns:
        Items like :func:`block_items`' (``image``, ``location``, ``size`` in tile pixels, ``label`` = ``z`` =
        the most likely z, ``slide`` -1) with ``pixel_labels`` (the label map), ``mask_level`` 0 and ``mpp``.
    """
    num_classes = len(label_stats.classes)
    items = []
    for block, counts in labelled_patches(records, block_size, mpp, num_classes, input_mpp, min_labelled=min_labelled):
        z = most_likely_z(counts / counts.sum(), label_stats)
        keep = {key: block[key] for key in ("image", "location", "size", "mpp")}
        items.append(keep | {"label": z, "z": z, "slide": -1, PIXEL_LABELS_KEY: block["mask"], "mask_level": 0})
    return items


class HighResPrepareBatch:
    """``prepare_batch`` of LSR's trainer: the blocks' z, plus their pixel labels when the batch has them.

    Returns ``(image, label)`` for batches without :data:`HIGH_RES_KEY` (only weak blocks: the plain LSR loss),
    else ``(image, {"z": label, "high_res": pixel targets})``, which :class:`LabelSuperResolutionLoss` reads.
    """

    def __call__(
        self,
        batchdata: Mapping[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | dict[str, torch.Tensor]]:
        image, label = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        if HIGH_RES_KEY not in batchdata:
            return image, label
        high_res = batchdata[HIGH_RES_KEY].to(device=device, non_blocking=non_blocking)
        return image, {"z": label, HIGH_RES_KEY: high_res}
