"""MixSup E-step pseudo labels: patch dropping by threshold T, re-weighting by V, hard negatives."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor, ensure_tuple_rep

__all__ = [
    "mixsup_pseudo_labels",
    "MixSupPseudoLabelStats",
    "mixsup_pseudo_label_stats",
    "MixSupPseudoLabel",
    "MixSupPseudoLabeld",
    "MixSupPseudoLabelD",
    "MixSupPseudoLabelDict",
]


def _check_parameters(threshold: float, scale: float, min_value: float) -> None:
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold T must lie in [0, 1] (it is compared with a probability), got {threshold}.")
    if not float(scale) > 0.0:
        raise ValueError(f"scale V must be > 0 (the paper uses V = 4.0), got {scale}.")
    if not 0.0 <= float(min_value) <= 1.0:
        raise ValueError(f"min_value must lie in [0, 1] (the paper uses 0.01), got {min_value}.")


def _as_slide_labels(slide_labels: Any, n: int) -> torch.Tensor:
    """Slide labels as a (n,) bool tensor, after checking that every value is 0 or 1."""

    def flat(v: Any) -> torch.Tensor:
        t = v.detach() if torch.is_tensor(v) else torch.as_tensor(np.asarray(v))
        return t.reshape(-1).cpu()

    try:
        if isinstance(slide_labels, (list, tuple)):
            parts = [flat(v).to(torch.float64) for v in slide_labels]
            labels = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
        else:
            labels = flat(slide_labels)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"slide labels must be 0 or 1, got {slide_labels!r}.") from e
    if labels.numel() != n:
        raise ValueError(f"slide_labels must have one entry per patch: expected {n}, got {labels.numel()}.")
    values = labels.to(torch.float64)
    bad = ~((values == 0) | (values == 1))
    if bool(bad.any()):
        found = sorted({float(v) for v in values[bad].tolist()})
        raise ValueError(
            f"slide labels must be 0 (negative) or 1 (positive) for MixSup binary pseudo labels, got {found}."
        )
    return values == 1


def mixsup_pseudo_labels(
    probs: NdarrayOrTensor,
    slide_labels: NdarrayOrTensor | Sequence[int],
    threshold: float = 0.4,
    scale: float = 4.0,
    min_value: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixSup E-step for a batch of patches (Li et al., Algorithm 1, E-step; METHODS.md §1).

    For every patch ``n``:

    * ``keep[n] = max(probs[n]) >= threshold`` -- a patch whose maximum pixel probability is
      below ``T`` is dropped, in positive AND negative slides;
    * positive slide: ``label[n] = clip(probs[n] * scale, 0, 1)``, then pixels whose *scaled*
      value is ``< min_value`` are set to 0 (``y_p+``);
    * negative slide: ``label[n] = 0`` everywhere (hard negative ``y_p-``).

    The rule is applied to dropped patches too (so a heat map of a dropped patch can still be
    drawn); callers select the training pools with ``keep``.

    Args:
        probs: ``(N, 1, *spatial)`` predicted foreground probabilities in [0, 1] (e.g. ``(N, 1, H, W)``).
        slide_labels: ``(N,)`` label of the slide each patch comes from, 0 or 1.
        threshold: ``T``, patch-removal threshold on the patch maximum (paper: 0.4).
        scale: ``V``, re-weighting factor for positive slides (paper: 4.0).
        min_value: scaled values below this become 0 (paper: 0.01).

    Returns:
        ``(labels, keep)``: ``labels`` ``(N, 1, *spatial)`` float tensor (dtype of ``probs`` if
        floating, else float32) and ``keep`` ``(N,)`` bool tensor.

    Raises:
        ValueError: on a parameter out of range, a wrong shape, probabilities outside [0, 1]
            (logits passed by mistake) or a slide label other than 0/1.
    """
    _check_parameters(threshold, scale, min_value)
    p = convert_to_tensor(probs, track_meta=False)
    if p.ndim < 3 or p.shape[1] != 1:
        raise ValueError(f"probs must have shape (N, 1, *spatial) (one foreground channel), got {tuple(p.shape)}.")
    if any(s == 0 for s in p.shape[2:]):
        raise ValueError(f"probs has an empty spatial size: {tuple(p.shape)}.")
    if not p.is_floating_point():
        p = p.float()
    n = p.shape[0]
    positive = _as_slide_labels(slide_labels, n).to(p.device)
    if p.numel() > 0:
        lo, hi = (float(v) for v in torch.aminmax(p))  # one pass; a NaN makes both NaN
        if lo != lo or hi != hi or lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"probs must be probabilities in [0, 1] (apply a sigmoid to logits first), got values in "
                f"[{lo:.4g}, {hi:.4g}]."
            )
    keep = p.flatten(1).amax(dim=1) >= threshold
    # in place on the one new tensor: maps of 512² px make every temporary count
    labels = torch.mul(p, scale).clamp_(0.0, 1.0)
    labels.masked_fill_(labels < min_value, 0.0)
    if not bool(positive.all()):
        labels.masked_fill_(~positive.reshape((n,) + (1,) * (p.ndim - 1)), 0.0)
    return labels, keep


@dataclass
class MixSupPseudoLabelStats:
    """Additive E-step statistics for one round (sum the per-batch objects with ``+``).

    Counts are exact integers so that summing over batches, workers or ranks is exact; the
    fractions are derived in :meth:`as_dict`, which returns plain floats for ``mlflow.log_metrics``.

    Attributes:
        patches: patches seen.
        kept: patches with maximum probability ``>= T``.
        kept_positive: kept patches of positive slides (the ``y_p+`` pool).
        hard_negatives: kept patches of negative slides (the ``y_p-`` pool).
        dropped_positive: dropped patches of positive slides.
        dropped_negative: dropped patches of negative slides.
        positive_pixels: pixels of ``y_p+`` patches whose label is ``>= positive_cutoff``.
        nonzero_pixels: pixels of ``y_p+`` patches whose label is ``> 0``.
        positive_slide_pixels: all pixels of ``y_p+`` patches.
        label_sum: sum of the soft labels of ``y_p+`` patches.
    """

    patches: int = 0
    kept: int = 0
    kept_positive: int = 0
    hard_negatives: int = 0
    dropped_positive: int = 0
    dropped_negative: int = 0
    positive_pixels: int = 0
    nonzero_pixels: int = 0
    positive_slide_pixels: int = 0
    label_sum: float = 0.0

    def __add__(self, other: MixSupPseudoLabelStats) -> MixSupPseudoLabelStats:
        if not isinstance(other, MixSupPseudoLabelStats):
            return NotImplemented
        return MixSupPseudoLabelStats(**{k: v + getattr(other, k) for k, v in asdict(self).items()})

    @property
    def dropped(self) -> int:
        return self.dropped_positive + self.dropped_negative

    @property
    def positive_pixel_fraction(self) -> float:
        """Fraction of ``y_p+`` pixels labelled ``>= positive_cutoff`` (0 when there are none)."""
        return self.positive_pixels / self.positive_slide_pixels if self.positive_slide_pixels else 0.0

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Counts and fractions as ``{prefix + name: float}``, ready for ``mlflow.log_metrics``."""
        px = self.positive_slide_pixels
        values = {
            "patches": self.patches,
            "kept": self.kept,
            "dropped": self.dropped,
            "kept_positive": self.kept_positive,
            "hard_negatives": self.hard_negatives,
            "dropped_positive": self.dropped_positive,
            "dropped_negative": self.dropped_negative,
            "dropped_fraction": self.dropped / self.patches if self.patches else 0.0,
            "positive_pixel_fraction": self.positive_pixel_fraction,
            "nonzero_pixel_fraction": self.nonzero_pixels / px if px else 0.0,
            "mean_positive_label": self.label_sum / px if px else 0.0,
        }
        return {f"{prefix}{k}": float(v) for k, v in values.items()}


def mixsup_pseudo_label_stats(
    labels: NdarrayOrTensor,
    keep: NdarrayOrTensor,
    slide_labels: NdarrayOrTensor | Sequence[int],
    positive_cutoff: float = 0.5,
) -> MixSupPseudoLabelStats:
    """Statistics of one batch of :func:`mixsup_pseudo_labels` output (METHODS.md §1: log them per round).

    Args:
        labels: ``(N, 1, *spatial)`` pseudo labels.
        keep: ``(N,)`` bool, patch kept by the threshold ``T``.
        slide_labels: ``(N,)`` slide labels, 0 or 1.
        positive_cutoff: a ``y_p+`` pixel counts as positive when its label is ``>= positive_cutoff``.

    Returns:
        A :class:`MixSupPseudoLabelStats`; add the objects of all batches of a round.
    """
    lab = convert_to_tensor(labels, track_meta=False)
    n = lab.shape[0]
    k = convert_to_tensor(keep, track_meta=False).reshape(-1).bool().to(lab.device)
    if k.numel() != n:
        raise ValueError(f"keep must have one entry per patch: expected {n}, got {k.numel()}.")
    pos = _as_slide_labels(slide_labels, n).to(lab.device)
    rows = k & pos
    y_plus = lab if bool(rows.all()) else lab[rows]  # no copy when every patch is a kept positive one
    return MixSupPseudoLabelStats(
        patches=int(n),
        kept=int(k.sum()),
        kept_positive=int(rows.sum()),
        hard_negatives=int((k & ~pos).sum()),
        dropped_positive=int((~k & pos).sum()),
        dropped_negative=int((~k & ~pos).sum()),
        positive_pixels=int(torch.count_nonzero(y_plus >= positive_cutoff)),
        nonzero_pixels=int(torch.count_nonzero(y_plus)),
        positive_slide_pixels=int(y_plus.numel()),
        label_sum=float(y_plus.sum(dtype=torch.float64)),
    )


class MixSupPseudoLabel(Transform):
    """MixSup pseudo label of one patch (Li et al., Algorithm 1, E-step).

    Returns ``None`` when the patch is dropped (maximum probability ``< threshold``, in positive
    and negative slides); otherwise the re-weighted label ``clip(p * scale, 0, 1)`` with scaled
    values ``< min_value`` set to 0 on a positive slide, or an all-zero hard negative on a negative
    slide. Output type, shape and dtype follow the input (tensor / ndarray / MetaTensor).

    Args:
        threshold: ``T`` on the patch maximum (paper: 0.4).
        scale: ``V`` (paper: 4.0).
        min_value: scaled values below this become 0 (paper: 0.01).

    Example::

        >>> MixSupPseudoLabel()(np.array([[0.1, 0.3], [0.002, 0.5]]), slide_label=1)
        array([[0.4, 1. ], [0. , 1. ]])
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, threshold: float = 0.4, scale: float = 4.0, min_value: float = 0.01) -> None:
        _check_parameters(threshold, scale, min_value)
        self.threshold = float(threshold)
        self.scale = float(scale)
        self.min_value = float(min_value)

    def __call__(self, img: NdarrayOrTensor, slide_label: int | float | NdarrayOrTensor) -> NdarrayOrTensor | None:
        """
        Args:
            img: ``(1, H, W)`` (channel-first) or ``(H, W)`` foreground probabilities in [0, 1].
            slide_label: 0 (negative slide) or 1 (positive slide).

        Returns:
            The pseudo label with the shape of ``img``, or ``None`` if the patch is dropped.
        """
        labels, keep = self.compute(img, slide_label)
        if not bool(keep):
            return None
        return labels

    def compute(self, img: NdarrayOrTensor, slide_label: int | float | NdarrayOrTensor) -> tuple[NdarrayOrTensor, bool]:
        """Pseudo label and keep flag, without replacing a dropped label by ``None``."""
        t = convert_to_tensor(img, track_meta=False)
        if t.ndim == 2:
            batch = t[None, None]
        elif t.ndim == 3 and t.shape[0] == 1:
            batch = t[None]
        else:
            raise ValueError(f"expected a (1, H, W) or (H, W) foreground probability map, got shape {tuple(t.shape)}.")
        labels, keep = mixsup_pseudo_labels(batch, [slide_label], self.threshold, self.scale, self.min_value)
        out, *_ = convert_to_dst_type(labels.reshape(t.shape), dst=img)
        return out, bool(keep[0])


class MixSupPseudoLabeld(MapTransform):
    """Dictionary version of :class:`MixSupPseudoLabel`.

    Writes the pseudo label to ``output_key`` and the keep flag (``max >= threshold``) to
    ``keep_key``. A dropped patch keeps its computed label (so it can still be collated and drawn)
    with ``keep`` False; the E-step filters on ``keep``.

    Args:
        keys: keys of the ``(1, H, W)`` / ``(H, W)`` probability maps (default ``"pred"``).
        slide_label_key: key of the slide label (0 or 1).
        output_key: key(s) for the pseudo labels, one per key in ``keys``.
        keep_key: key(s) for the keep flags, one per key in ``keys``.
        threshold: ``T`` (paper: 0.4).
        scale: ``V`` (paper: 4.0).
        min_value: scaled values below this become 0 (paper: 0.01).
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = MixSupPseudoLabel.backend

    def __init__(
        self,
        keys: KeysCollection = ("pred",),
        slide_label_key: str = "label",
        output_key: KeysCollection = "pseudo_label",
        keep_key: KeysCollection = "keep",
        threshold: float = 0.4,
        scale: float = 4.0,
        min_value: float = 0.01,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = MixSupPseudoLabel(threshold=threshold, scale=scale, min_value=min_value)
        self.slide_label_key = slide_label_key
        self.output_keys = ensure_tuple_rep(output_key, len(self.keys))
        self.keep_keys = ensure_tuple_rep(keep_key, len(self.keys))
        for name, out in (("output_key", self.output_keys), ("keep_key", self.keep_keys)):
            if len(set(out)) != len(out):
                raise ValueError(f"{name} must name one distinct output per key in {self.keys}, got {out}.")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.slide_label_key not in d:
            raise KeyError(f"slide label key {self.slide_label_key!r} is missing; available keys: {list(d)}.")
        slide_label = d[self.slide_label_key]
        for key, out_key, keep_key in self.key_iterator(d, self.output_keys, self.keep_keys):
            d[out_key], d[keep_key] = self.converter.compute(d[key], slide_label)
        return d


MixSupPseudoLabelD = MixSupPseudoLabelDict = MixSupPseudoLabeld
