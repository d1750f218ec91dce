"""Pseudo-label rules: slide predictions of one pass -> the training pools of the next round.

This is where pseudo labels are made. A rule is called by the round runner as
``rule(predictions, round_index=r, previous=labels of round r-1 or None)`` and returns a
:class:`~mixsup_monai.rounds.PseudoLabelSet`; the per-patch maths lives in MONAI transforms
(MixSup: :func:`mixsup_monai.methods.mixsup.mixsup_pseudo_labels`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from mixsup_monai.methods.mixsup.data import slide_label_of
from mixsup_monai.methods.mixsup.pseudo_labels import (
    MixSupPseudoLabelStats,
    mixsup_pseudo_label_stats,
    mixsup_pseudo_labels,
)
from mixsup_monai.rounds.predict import SlidePrediction, training_item
from mixsup_monai.rounds.store import PseudoLabelSet

__all__ = ["MixSupRule", "TopKMILRule"]

_DTYPES = {"float16": np.float16, "float32": np.float32}
_TORCH_DTYPES = {np.float16: torch.float16, np.float32: torch.float32}


class MixSupRule:
    """MixSup E-step (Li et al., Algorithm 1; METHODS.md §1): pools ``positive`` (y_p+) and ``negative`` (y_p-).

    Per patch of every image-labelled slide (pixel maps from the prediction pass, ``(N, 1, p, p)``
    probabilities): drop it when its maximum probability is ``< threshold`` (T, positive and negative
    slides); on a positive slide keep ``clip(p * scale, 0, 1)`` with scaled values ``< min_value`` set to 0
    (V); on a negative slide it is a hard negative with an all-zero label. The maths is
    :func:`mixsup_monai.methods.mixsup.mixsup_pseudo_labels`; statistics (kept / dropped by T, hard negatives,
    positive-pixel fraction) are :func:`mixsup_monai.methods.mixsup.mixsup_pseudo_label_stats`, prefixed
    ``pseudo/``.

    Items of ``positive`` carry their soft label as the array ``label`` ``(N, 1, p, p)`` (``label_dtype``);
    items of ``negative`` carry ``label_fill = 0.0`` instead of an all-zero array (no disk or memory spent
    on zeros; :class:`~mixsup_monai.methods.mixsup.PatchTargetd` expands it).

    Args:
        threshold: T (paper 0.4).
        scale: V (paper 4.0).
        min_value: scaled values below it become 0 (paper 0.01).
        label_key: slide key of the image-level label (0/1).
        label_dtype: ``"float16"`` (default) or ``"float32"`` storage of the soft labels.
        positive_cutoff: a y_p+ pixel counts as positive in the statistics when ``>= positive_cutoff``.
        positive_labels: multi-class slide labels (e.g. pN stages): the labels whose slides are positive
            (every other label is negative); ``None`` (default): labels must be 0 or 1.
    """

    #: map values per step of the rule: bounds its float32 temporaries (64 MB each) whatever the slide's size.
    CHUNK_VALUES = 2**24

    def __init__(
        self,
        threshold: float = 0.4,
        scale: float = 4.0,
        min_value: float = 0.01,
        label_key: str = "label",
        label_dtype: str = "float16",
        positive_cutoff: float = 0.5,
        positive_labels: Sequence[int] | None = None,
    ) -> None:
        mixsup_pseudo_labels(torch.zeros(1, 1, 1, 1), [0], threshold, scale, min_value)  # validates the parameters
        if label_dtype not in _DTYPES:
            raise ValueError(f"label_dtype must be one of {sorted(_DTYPES)}, got {label_dtype!r}")
        self.threshold = float(threshold)
        self.scale = float(scale)
        self.min_value = float(min_value)
        self.label_key = label_key
        self.label_dtype = _DTYPES[label_dtype]
        self.positive_cutoff = float(positive_cutoff)
        self.positive_labels = None if positive_labels is None else {int(v) for v in positive_labels}

    def config(self) -> dict:
        out = {"rule": "mixsup", "T": self.threshold, "V": self.scale, "min_value": self.min_value}
        if self.positive_labels is not None:
            out["positive_labels"] = sorted(self.positive_labels)
        return out

    def _positive(self, slide: Mapping) -> int:
        if self.positive_labels is None:
            return slide_label_of(slide, self.label_key)
        return int(slide_label_of(slide, self.label_key, binary=False) in self.positive_labels)

    def __call__(
        self,
        predictions: Iterable[SlidePrediction],
        round_index: int,
        previous: PseudoLabelSet | None = None,
        labels: PseudoLabelSet | None = None,
    ) -> PseudoLabelSet:
        """The pools of round ``round_index``, filled slide by slide into ``labels`` (default: a new set in memory).

        The round runner passes the set of :meth:`~mixsup_monai.rounds.PseudoLabelStore.open_round`: each slide's
        labels are then on disk once the slide is done, and memory holds one slide's, not the cohort's.
        """
        labels = PseudoLabelSet(round_index) if labels is None else labels
        stats = MixSupPseudoLabelStats()
        slides = {"positive_slides": 0, "negative_slides": 0, "positive_slides_without_kept_patch": 0}
        for name in ("positive", "negative"):
            labels.add(name, [])
        for pred in predictions:
            y = self._positive(pred.slide)
            slides["positive_slides" if y else "negative_slides"] += 1
            if len(pred) == 0:
                continue
            slide_kept = 0
            for chunk_stats, kept, rows in self._label_chunks(pred, y):
                stats = stats + chunk_stats
                slide_kept += len(kept)
                if y == 1:
                    labels.add("positive", [training_item(pred, i, slide_label=1) for i in kept], {"label": rows})
                else:
                    labels.add("negative", [training_item(pred, i, slide_label=0, label_fill=0.0) for i in kept])
            slides["positive_slides_without_kept_patch"] += int(y == 1 and slide_kept == 0)
        labels.stats = stats.as_dict(prefix="pseudo/")
        labels.stats.update({f"pseudo/{k}": float(v) for k, v in slides.items()})
        labels.meta = self.config()
        return labels

    def _label_chunks(
        self, pred: SlidePrediction, y: int
    ) -> Iterator[tuple[MixSupPseudoLabelStats, list[int], np.ndarray | None]]:
        """Per chunk of a slide's patches: ``(statistics, kept patch indices, (len(kept), 1, p, p) labels)``.

        Chunks of ``CHUNK_VALUES`` map values bound the rule's memory whatever the slide's size (its outputs may
        be memory-mapped from disk); labels are ``None`` on a negative slide (hard negatives need none).
        """
        outputs = pred.outputs
        if outputs.ndim != 4 or outputs.shape[1] != 1:
            raise ValueError(
                f"slide {pred.slide.get('image')!r}: MixSupRule needs (N, 1, H, W) probability maps from the "
                f"predictor (activation='sigmoid', one output channel), got {tuple(outputs.shape)}"
            )
        chunk = max(1, self.CHUNK_VALUES // max(1, outputs[0].numel()))
        for start in range(0, len(pred), chunk):
            probs = outputs[start : start + chunk].float()
            ys = [y] * len(probs)
            chunk_labels, keep = mixsup_pseudo_labels(probs, ys, self.threshold, self.scale, self.min_value)
            stats = mixsup_pseudo_label_stats(chunk_labels, keep, ys, self.positive_cutoff)
            kept = (torch.nonzero(keep).reshape(-1) + start).tolist()
            rows = None
            if y == 1:
                rows = chunk_labels if bool(keep.all()) else chunk_labels[keep]
                rows = rows.to(_TORCH_DTYPES[self.label_dtype]).numpy()  # torch converts 1.5x faster than numpy
            yield stats, kept, rows


class TopKMILRule:
    """Image-level baseline (Campanella et al. 2019 top-k MIL): each slide's ``k`` highest-scoring patches.

    Every round re-scores all tissue patches (the prediction pass) and labels the top ``k`` patches of
    each slide with the slide label (a constant map, ``label_fill``), in the pool ``pool`` -- the M-step
    then trains on them only. Slide labels only; no pixel labels.

    Args:
        k: patches per slide (Campanella's code: 1).
        pool: name of the pool filled.
        label_key: slide key of the label (0/1).
    """

    def __init__(self, k: int = 1, pool: str = "mil", label_key: str = "label") -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        self.k = k
        self.pool = pool
        self.label_key = label_key

    def config(self) -> dict:
        return {"rule": "topk_mil", "k": self.k}

    def __call__(
        self,
        predictions: Iterable[SlidePrediction],
        round_index: int,
        previous: PseudoLabelSet | None = None,
        labels: PseudoLabelSet | None = None,
    ) -> PseudoLabelSet:
        """The pool of round ``round_index``, filled slide by slide into ``labels`` (default: a new set)."""
        labels = PseudoLabelSet(round_index) if labels is None else labels
        labels.add(self.pool, [])
        kept = pos = neg = 0
        for pred in predictions:
            y = slide_label_of(pred.slide, self.label_key)
            if len(pred) == 0:
                continue
            top = torch.argsort(pred.scores.float(), descending=True, stable=True)[: self.k].tolist()
            labels.add(self.pool, [training_item(pred, i, slide_label=y, label_fill=float(y)) for i in top])
            kept += len(top)
            pos += len(top) if y else 0
            neg += 0 if y else len(top)
        labels.stats = {
            "pseudo/kept": float(kept),
            "pseudo/kept_positive": float(pos),
            "pseudo/hard_negatives": float(neg),
        }
        labels.meta = self.config()
        return labels
