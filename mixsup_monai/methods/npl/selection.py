"""NPL selectivity: positive / negative pseudo labels of a slide's patches from its class proportions."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.utils import StrEnum, look_up_option

__all__ = [
    "FractionOf",
    "Rounding",
    "ProportionSelection",
    "ProportionSelector",
    "predicted_class_ratio",
    "sum_absolute_error",
    "negative_selectivity",
    "positive_selectivity",
    "round_counts",
    "proportion_pseudo_labels",
    "fixed_threshold_pseudo_labels",
    "accumulate_negative_labels",
    "summarize_selections",
]

_EPS = 1e-9


class FractionOf(StrEnum):
    """What NS_c / PS_c are fractions of when turned into patch counts."""

    SLIDE = "slide"
    PREDICTED = "predicted"


class Rounding(StrEnum):
    """How a fractional patch count becomes an integer."""

    ROUND = "round"
    STOCHASTIC = "stochastic"


def _plain(x: object, dtype: np.dtype | None = None) -> torch.Tensor:
    """A plain CPU tensor (no MetaTensor, no graph) from a tensor, ndarray or nested sequence."""
    if torch.is_tensor(x):
        t = x.detach()
        return (t.as_tensor() if isinstance(t, MetaTensor) else t).cpu()
    return torch.as_tensor(np.asarray(x, dtype=dtype))


def _as_probs(probs: NdarrayOrTensor, slide_id: str | None = None) -> torch.Tensor:
    where = f"slide {slide_id!r}: " if slide_id is not None else ""
    p = _plain(probs)
    if p.ndim != 2:
        raise ValueError(f"{where}probs must have shape (N, C) (patches x classes), got {tuple(p.shape)}.")
    if p.shape[0] == 0:
        raise ValueError(f"{where}no tumour patches to select pseudo labels from (probs has 0 rows).")
    if p.shape[1] < 2:
        raise ValueError(f"{where}need at least 2 classes, got probs of shape {tuple(p.shape)}.")
    if not p.is_floating_point():
        p = p.to(torch.float64)  # keep float32 as is: PL@0.95 must keep a float32 0.95
    lo, hi = float(p.min()), float(p.max())
    if bool(torch.isnan(p).any()) or lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{where}probs must be class probabilities in [0, 1] (apply a softmax to logits first), got "
            f"values in [{lo:.4g}, {hi:.4g}]."
        )
    return p


def _as_tcr(
    tcr: NdarrayOrTensor | Sequence[float], n_classes: int, tolerance: float, slide_id: str | None
) -> torch.Tensor:
    where = f"slide {slide_id!r}: " if slide_id is not None else ""
    t = _plain(tcr, np.float64)
    t = t.to(torch.float64).reshape(-1)
    if t.numel() != n_classes:
        raise ValueError(f"{where}TCR has {t.numel()} classes but probs has {n_classes} columns.")
    if bool(torch.isnan(t).any()) or bool((t < 0).any()):
        raise ValueError(f"{where}TCR must be non-negative proportions, got {t.tolist()}.")
    total = float(t.sum())
    if abs(total - 1.0) > tolerance:
        hint = " (percentages? divide by 100)" if abs(total - 100.0) <= 100 * tolerance else ""
        raise ValueError(
            f"{where}TCR must sum to 1 ± {tolerance:g}, got sum {total:.4g}{hint}: {[round(v, 4) for v in t.tolist()]}."
        )
    return t / total


def predicted_class_ratio(probs: NdarrayOrTensor) -> torch.Tensor:
    """PCR_c: fraction of the slide's patches whose arg-max class is ``c`` (Tokunaga et al., §3.2).

    Args:
        probs: ``(N, C)`` class probabilities of the slide's N tumour patches.

    Returns:
        ``(C,)`` float64 tensor summing to 1.
    """
    p = _as_probs(probs)
    return torch.bincount(p.argmax(dim=1), minlength=p.shape[1]).to(torch.float64) / p.shape[0]


def sum_absolute_error(tcr: torch.Tensor, pcr: torch.Tensor) -> float:
    """SAE = min(1, Σ_c |TCR_c - PCR_c|) (Tokunaga et al., Eq. 2, corrected).

    The paper prints ``max(1, ·)`` but states that SAE lies in [0, 1]; ``max`` would make it always
    >= 1 (METHODS.md §3).
    """
    return min(1.0, float((torch.as_tensor(tcr) - torch.as_tensor(pcr)).abs().sum()))


def negative_selectivity(tcr: torch.Tensor, pcr: torch.Tensor, sae: float) -> torch.Tensor:
    """NS_c = SAE · max(0, PCR_c - TCR_c) · (1 - TCR_c / PCR_c), 0 where PCR_c = 0 (Tokunaga et al., Eq. 1).

    Args:
        tcr: ``(C,)`` true class ratio.
        pcr: ``(C,)`` predicted class ratio.
        sae: :func:`sum_absolute_error` of the slide.

    Returns:
        ``(C,)`` fractions (of the slide, or of the patches predicted ``c``, see ``fraction_of``).
    """
    tcr, pcr = torch.as_tensor(tcr, dtype=torch.float64), torch.as_tensor(pcr, dtype=torch.float64)
    safe = torch.where(pcr > 0, pcr, torch.ones_like(pcr))
    ns = sae * torch.clamp(pcr - tcr, min=0.0) * (1.0 - tcr / safe)
    return torch.where(pcr > 0, ns, torch.zeros_like(ns)) + 0.0  # + 0.0 turns -0.0 into 0.0


def positive_selectivity(tcr: torch.Tensor, pcr: torch.Tensor, sae: float) -> torch.Tensor:
    """PS_c = (1 - SAE) · min(TCR_c, PCR_c) (Tokunaga et al., Eq. 5, adaptive pseudo labelling).

    Returns:
        ``(C,)`` fractions (of the slide, or of the patches predicted ``c``, see ``fraction_of``).
    """
    tcr, pcr = torch.as_tensor(tcr, dtype=torch.float64), torch.as_tensor(pcr, dtype=torch.float64)
    return (1.0 - sae) * torch.minimum(tcr, pcr)


def round_counts(
    values: torch.Tensor, rounding: Rounding | str = Rounding.ROUND, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Fractional patch counts to integers.

    ``"round"`` rounds half up. ``"stochastic"`` rounds ``x`` up with probability ``x - floor(x)``
    (unbiased: the expected count is ``x``). Why it exists: on a slide with few patches
    ``NS_c · N_slide`` drops below 0.5 once SAE is small, so plain rounding stops negative
    labelling after a round or two (METHODS.md §3); stochastic rounding keeps the expected number
    of labels. Draws come from ``generator`` (one ``(C,)`` draw per call), so seeded runs repeat.

    Args:
        values: ``(C,)`` non-negative counts.
        rounding: ``"round"`` or ``"stochastic"``.
        generator: required for ``"stochastic"``.

    Returns:
        ``(C,)`` int64 tensor.
    """
    mode = look_up_option(rounding, Rounding)
    v = torch.as_tensor(values, dtype=torch.float64)
    nearest = torch.round(v)
    v = torch.where((v - nearest).abs() < _EPS, nearest, v)  # 9.000000000000002 is 9
    if mode == Rounding.ROUND:
        return torch.floor(v + 0.5).to(torch.int64)
    if generator is None:
        raise ValueError(
            "rounding='stochastic' needs a seeded generator (generator=torch.Generator().manual_seed(seed)) "
            "so that runs repeat; or use ProportionSelector(seed=...)."
        )
    floor = torch.floor(v)
    draw = torch.rand(v.shape, generator=generator, dtype=torch.float64)
    return (floor + (draw < (v - floor)).to(torch.float64)).to(torch.int64)


def fixed_threshold_pseudo_labels(probs: NdarrayOrTensor, threshold: float = 0.95) -> torch.Tensor:
    """Plain pseudo labelling (Lee 2013; the paper's "Pseudo Labeling" baseline with threshold 0.95).

    Args:
        probs: ``(N, C)`` class probabilities.
        threshold: a patch gets its arg-max class when that class's probability is ``>= threshold``.

    Returns:
        ``(N,)`` int64 positive labels, -1 = no label.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}.")
    p = _as_probs(probs)
    conf, cls = p.max(dim=1)
    return torch.where(conf >= threshold, cls, torch.full_like(cls, -1))


def accumulate_negative_labels(previous: NdarrayOrTensor | None, new: NdarrayOrTensor) -> torch.Tensor:
    """Multi negative pseudo labelling: union of earlier rounds' "not c" labels and this round's (§3.3).

    Args:
        previous: ``(N, C)`` bool negative labels accumulated so far, or ``None`` in the first round.
        new: ``(N, C)`` bool negative labels of this round.

    Returns:
        ``(N, C)`` bool tensor ``previous | new``.
    """
    n = _plain(new).bool()
    if n.ndim != 2:
        raise ValueError(f"negative labels must have shape (N, C), got {tuple(n.shape)}.")
    if previous is None:
        return n.clone()
    p = _plain(previous).bool()
    if p.shape != n.shape:
        raise ValueError(f"previous negative labels have shape {tuple(p.shape)}, new ones {tuple(n.shape)}.")
    return p | n


@dataclass
class ProportionSelection:
    """Pseudo labels and summary of one slide in one round.

    Attributes:
        positive: ``(N,)`` int64 positive pseudo label per patch, -1 = none.
        negative: ``(N, C)`` bool negative pseudo labels ("not c") assigned this round; combine with
            earlier rounds by :func:`accumulate_negative_labels`.
        predicted: ``(N,)`` int64 arg-max class per patch.
        pcr: ``(C,)`` predicted class ratio.
        tcr: ``(C,)`` true class ratio (re-normalised to sum 1).
        sae: sum absolute error, in [0, 1].
        ns: ``(C,)`` negative selectivity NS_c (Eq. 1).
        ps: ``(C,)`` positive selectivity PS_c (Eq. 5).
        n_positive: ``(C,)`` int64 positive labels given per class.
        n_negative: ``(C,)`` int64 negative labels given per class this round.
        slide_id: identifier of the slide, if given.
    """

    positive: torch.Tensor
    negative: torch.Tensor
    predicted: torch.Tensor
    pcr: torch.Tensor
    tcr: torch.Tensor
    sae: float
    ns: torch.Tensor
    ps: torch.Tensor
    n_positive: torch.Tensor
    n_negative: torch.Tensor
    slide_id: str | None = None

    @property
    def n_patches(self) -> int:
        return int(self.positive.shape[0])

    def summary(self, class_names: Sequence[str] | None = None) -> dict[str, float]:
        """Flat ``{name: float}`` summary (SAE, and per class PCR, TCR, positive / negative counts)."""
        names = _class_names(class_names, self.pcr.numel())
        out: dict[str, float] = {"patches": float(self.n_patches), "sae": float(self.sae)}
        for c, name in enumerate(names):
            out[f"pcr/{name}"] = float(self.pcr[c])
            out[f"tcr/{name}"] = float(self.tcr[c])
            out[f"positive/{name}"] = float(self.n_positive[c])
            out[f"negative/{name}"] = float(self.n_negative[c])
        return out


def _class_names(class_names: Sequence[str] | None, n: int) -> list[str]:
    if class_names is None:
        return [str(c) for c in range(n)]
    if len(class_names) != n:
        raise ValueError(f"class_names has {len(class_names)} names for {n} classes.")
    return [str(c) for c in class_names]


def _previous_negative(
    previous_negative: NdarrayOrTensor | None, shape: tuple[int, int], slide_id: str | None
) -> torch.Tensor:
    """``(N, C)`` bool negative labels of earlier rounds (all False when there are none), shape-checked."""
    if previous_negative is None:
        return torch.zeros(shape, dtype=torch.bool)
    prev = accumulate_negative_labels(None, previous_negative).cpu()
    if prev.shape != shape:
        raise ValueError(f"slide {slide_id!r}: previous_negative has shape {tuple(prev.shape)}, expected {shape}.")
    return prev


@dataclass
class _Selectivity:
    """One slide's arg-max classes, PCR, SAE, NS / PS and the label counts they give (steps of §3.2)."""

    predicted: torch.Tensor  # (N,) arg-max class per patch
    pcr: torch.Tensor  # (C,) predicted class ratio
    sae: float
    ns: torch.Tensor  # (C,) negative selectivity (Eq. 1)
    ps: torch.Tensor  # (C,) positive selectivity (Eq. 5)
    k_neg: torch.Tensor  # (C,) int64 negative labels to give, at most the patches predicted c
    k_pos: torch.Tensor  # (C,) int64 positive labels to give, likewise


def _selectivity(
    p: torch.Tensor, t: torch.Tensor, mode: FractionOf, rounding: Rounding | str, generator: torch.Generator | None
) -> _Selectivity:
    """The selectivities of a slide with class probabilities ``p`` ``(N, C)`` and true class ratio ``t`` ``(C,)``."""
    n, c = p.shape
    predicted = p.argmax(dim=1)
    n_pred = torch.bincount(predicted, minlength=c)
    pcr = n_pred.to(torch.float64) / n
    sae = sum_absolute_error(t, pcr)
    ns = negative_selectivity(t, pcr, sae)
    ps = positive_selectivity(t, pcr, sae)
    base = torch.full((c,), float(n), dtype=torch.float64) if mode == FractionOf.SLIDE else n_pred.to(torch.float64)
    # draw both count vectors always, so the generator advances the same way whatever the switches
    k_neg = torch.minimum(round_counts(ns * base, rounding, generator), n_pred)
    k_pos = torch.minimum(round_counts(ps * base, rounding, generator), n_pred)
    return _Selectivity(predicted, pcr, sae, ns, ps, k_neg, k_pos)


def _least_confident(p: torch.Tensor, predicted: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` bool: "not c" for the ``k[c]`` patches predicted ``c`` with the lowest ``p[:, c]`` (ties: order)."""
    negative = torch.zeros(p.shape, dtype=torch.bool)
    for cls in range(p.shape[1]):
        members = torch.nonzero(predicted == cls).reshape(-1)
        if int(k[cls]) == 0 or members.numel() == 0:
            continue
        order = torch.sort(p[members, cls], stable=True).indices
        negative[members[order[: int(k[cls])]], cls] = True
    return negative


def _most_confident(p: torch.Tensor, predicted: torch.Tensor, k: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
    """``(N,)`` int64: class ``c`` for the ``k[c]`` patches predicted ``c`` with the highest ``p[:, c]`` that are not
    ``blocked[:, c]`` (ties: patch order), -1 elsewhere."""
    labels = torch.full((p.shape[0],), -1, dtype=torch.int64)
    for cls in range(p.shape[1]):
        members = torch.nonzero((predicted == cls) & ~blocked[:, cls]).reshape(-1)
        if int(k[cls]) == 0 or members.numel() == 0:
            continue
        order = torch.sort(p[members, cls], descending=True, stable=True).indices
        labels[members[order[: int(k[cls])]]] = cls
    return labels


def _pseudo_labels(
    p: torch.Tensor,
    sel: _Selectivity,
    previous_negative: torch.Tensor,
    negative: bool,
    positive: bool,
    adaptive: bool,
    positive_threshold: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positive (N,) int64, negative (N, C) bool)`` labels of this round; "not c" (now or before) never gets c."""
    new_negative = _least_confident(p, sel.predicted, sel.k_neg) if negative else torch.zeros(p.shape, dtype=torch.bool)
    blocked = previous_negative | new_negative
    labels = torch.full((p.shape[0],), -1, dtype=torch.int64)
    if positive and adaptive:
        labels = _most_confident(p, sel.predicted, sel.k_pos, blocked)
    elif positive:
        fixed = fixed_threshold_pseudo_labels(p, positive_threshold)
        has = fixed >= 0
        conflict = torch.zeros_like(has)
        conflict[has] = blocked[has.nonzero().reshape(-1), fixed[has]]
        labels = torch.where(has & ~conflict, fixed, labels)
    return labels, new_negative


def proportion_pseudo_labels(
    probs: NdarrayOrTensor,
    tcr: NdarrayOrTensor | Sequence[float],
    previous_negative: NdarrayOrTensor | None = None,
    *,
    fraction_of: FractionOf | str = FractionOf.SLIDE,
    rounding: Rounding | str = Rounding.ROUND,
    generator: torch.Generator | None = None,
    adaptive: bool = True,
    positive_threshold: float = 0.95,
    positive: bool = True,
    negative: bool = True,
    tcr_tolerance: float = 0.02,
    slide_id: str | None = None,
) -> ProportionSelection:
    """Negative and adaptive positive pseudo labels of one slide (Tokunaga et al., §3.2, §4; METHODS.md §3).

    Steps: ``PCR_c`` = fraction of patches whose arg-max is ``c``; ``SAE = min(1, Σ|TCR - PCR|)``;
    ``NS_c`` (Eq. 1) and ``PS_c`` (Eq. 5); counts ``k = NS_c · base`` and ``PS_c · base`` with
    ``base = N_slide`` (``fraction_of="slide"``, default: the paper's "the excess 15 % of the slide")
    or ``base = #patches predicted c`` (``"predicted"``, about half as many labels), rounded by
    ``rounding``. Among the patches predicted ``c``:

    * the ``k_neg`` LEAST confident (lowest ``f(c|x)``) get the negative label "not c";
    * the ``k_pos`` MOST confident get the positive label ``c`` -- except a patch that carries
      "not c" (this round or in ``previous_negative``), which never gets ``c`` (conflict rule): it is
      skipped and the next most confident patch takes its place.

    Ties in confidence are broken by patch order. Since ``NS_c + PS_c <= PCR_c``, the two selections
    of one round do not overlap (up to rounding). With ``adaptive=False`` the positive labels are
    those of :func:`fixed_threshold_pseudo_labels` at ``positive_threshold`` (ablation "fixed at
    0.95"), still subject to the conflict rule; ``positive=False`` / ``negative=False`` switch
    either side off (ablations "NPL only" / "PL only").

    Args:
        probs: ``(N, C)`` class probabilities of the slide's N tumour patches over the C classes
            considered (a column subset of a softmax is fine; the arg-max is over these columns).
        tcr: ``(C,)`` true class ratio, summing to 1 ± ``tcr_tolerance`` (re-normalised to 1).
        previous_negative: ``(N, C)`` bool negative labels accumulated in earlier rounds, or None.
        fraction_of: ``"slide"`` or ``"predicted"``.
        rounding: ``"round"`` (half up) or ``"stochastic"`` (see :func:`round_counts`).
        generator: seeded generator, required for stochastic rounding.
        adaptive: adaptive positive selectivity (True) or a fixed threshold (False).
        positive_threshold: the fixed threshold used when ``adaptive=False``.
        positive: give positive pseudo labels.
        negative: give negative pseudo labels.
        tcr_tolerance: accepted deviation of ``sum(tcr)`` from 1.
        slide_id: named in error messages and kept in the result.

    Returns:
        A :class:`ProportionSelection`.

    Raises:
        ValueError: no patches, wrong shapes, probabilities outside [0, 1], TCR not summing to 1,
            unknown option strings, stochastic rounding without a generator.
    """
    mode = look_up_option(fraction_of, FractionOf)
    look_up_option(rounding, Rounding)
    if not 0.0 <= float(positive_threshold) <= 1.0:
        raise ValueError(f"positive_threshold must lie in [0, 1], got {positive_threshold}.")
    p = _as_probs(probs, slide_id)
    t = _as_tcr(tcr, p.shape[1], tcr_tolerance, slide_id)
    prev = _previous_negative(previous_negative, tuple(p.shape), slide_id)
    sel = _selectivity(p, t, mode, rounding, generator)
    labels, new_negative = _pseudo_labels(p, sel, prev, negative, positive, adaptive, positive_threshold)
    return ProportionSelection(
        positive=labels,
        negative=new_negative,
        predicted=sel.predicted,
        pcr=sel.pcr,
        tcr=t,
        sae=sel.sae,
        ns=sel.ns,
        ps=sel.ps,
        n_positive=torch.bincount(labels[labels >= 0], minlength=p.shape[1]),
        n_negative=new_negative.sum(dim=0),
        slide_id=slide_id,
    )


def _is_absolute(path: str) -> bool:
    return PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute()


class ProportionSelector:
    """Configured NPL selectivity, callable per slide (for bundle configs and Ignite handlers).

    Holds the options of :func:`proportion_pseudo_labels`. For stochastic rounding each call seeds
    its own generator from ``(seed, round_index, crc32(seed_key or slide_id))``: the draws do not depend on the
    order in which slides are visited, and a run resumed at round r repeats them exactly. The key must
    name the slide independently of where it lies (:class:`~mixsup_monai.methods.npl.NPLRule` passes
    its file stem, :func:`~mixsup_monai.data.slide_id`, as ``seed_key`` and its path as ``slide_id`` for
    messages), so an absolute path as key is refused: with it, the same cohort in another folder (or a
    clone of the repository elsewhere) would draw differently.

    Args:
        fraction_of: ``"slide"`` (default) or ``"predicted"``.
        rounding: ``"round"`` (default) or ``"stochastic"``.
        seed: base seed for stochastic rounding.
        adaptive, positive_threshold, positive, negative, tcr_tolerance: see
            :func:`proportion_pseudo_labels`.
    """

    def __init__(
        self,
        fraction_of: FractionOf | str = FractionOf.SLIDE,
        rounding: Rounding | str = Rounding.ROUND,
        seed: int = 0,
        adaptive: bool = True,
        positive_threshold: float = 0.95,
        positive: bool = True,
        negative: bool = True,
        tcr_tolerance: float = 0.02,
    ) -> None:
        self.fraction_of = look_up_option(fraction_of, FractionOf)
        self.rounding = look_up_option(rounding, Rounding)
        if not 0.0 <= float(positive_threshold) <= 1.0:
            raise ValueError(f"positive_threshold must lie in [0, 1], got {positive_threshold}.")
        self.seed = int(seed)
        self.adaptive = adaptive
        self.positive_threshold = float(positive_threshold)
        self.positive = positive
        self.negative = negative
        self.tcr_tolerance = float(tcr_tolerance)

    def __call__(
        self,
        probs: NdarrayOrTensor,
        tcr: NdarrayOrTensor | Sequence[float],
        previous_negative: NdarrayOrTensor | None = None,
        *,
        slide_id: str | None = None,
        round_index: int = 0,
        seed_key: str | None = None,
    ) -> ProportionSelection:
        """Select pseudo labels of one slide; see :func:`proportion_pseudo_labels` for shapes.

        Args:
            slide_id: the slide, named in error messages and kept in the result (a path is fine).
            round_index: the round, part of the seed.
            seed_key: the slide's part of the seed, independent of its folder (default ``slide_id``).

        Raises:
            ValueError: with stochastic rounding, the key is an absolute path (the draws would depend on the folder).
        """
        key_text = slide_id if seed_key is None else seed_key
        if self.rounding == Rounding.STOCHASTIC and key_text is not None and _is_absolute(key_text):
            raise ValueError(
                f"seed key {key_text!r} is an absolute path: it seeds the slide's random draws, which would then "
                "depend on the folder the data lies in; pass seed_key=mixsup_monai.data.slide_id(slide)"
            )
        key = zlib.crc32(str(key_text).encode("utf-8"))
        seed = int(np.random.SeedSequence([self.seed, int(round_index), key]).generate_state(1, dtype=np.uint64)[0])
        generator = torch.Generator().manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)
        return proportion_pseudo_labels(
            probs,
            tcr,
            previous_negative,
            fraction_of=self.fraction_of,
            rounding=self.rounding,
            generator=generator,
            adaptive=self.adaptive,
            positive_threshold=self.positive_threshold,
            positive=self.positive,
            negative=self.negative,
            tcr_tolerance=self.tcr_tolerance,
            slide_id=slide_id,
        )


def summarize_selections(
    selections: Sequence[ProportionSelection], class_names: Sequence[str] | None = None
) -> dict[str, float]:
    """Per-round summary over slides, ready for ``mlflow.log_metrics``.

    Returns:
        ``slides``, ``patches``, ``sae_mean`` / ``sae_max``, ``positive`` / ``negative`` totals and
        ``positive/<class>`` / ``negative/<class>`` per class.
    """
    if not selections:
        return {"slides": 0.0, "patches": 0.0}
    c = selections[0].pcr.numel()
    names = _class_names(class_names, c)
    pos = torch.stack([s.n_positive for s in selections]).sum(dim=0)
    neg = torch.stack([s.n_negative for s in selections]).sum(dim=0)
    sae = torch.tensor([s.sae for s in selections], dtype=torch.float64)
    out = {
        "slides": float(len(selections)),
        "patches": float(sum(s.n_patches for s in selections)),
        "sae_mean": float(sae.mean()),
        "sae_max": float(sae.max()),
        "positive": float(pos.sum()),
        "negative": float(neg.sum()),
    }
    for i, name in enumerate(names):
        out[f"positive/{name}"] = float(pos[i])
        out[f"negative/{name}"] = float(neg[i])
    return out
