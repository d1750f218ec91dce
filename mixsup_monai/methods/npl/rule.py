"""NPL pseudo-label rule for the round runner: weak-slide predictions + proportions -> positive / negative pools."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mixsup_monai.data.identity import SlideIdentities
from mixsup_monai.methods.npl.data import oversample_by_class, patch_labels, slide_name
from mixsup_monai.methods.npl.selection import ProportionSelection, ProportionSelector
from mixsup_monai.rounds.predict import SlidePrediction, training_item
from mixsup_monai.rounds.store import PseudoLabelPool, PseudoLabelSet
from mixsup_monai.wsi.labels import IGNORE_INDEX, read_label_map

__all__ = ["NPLRule"]

logger = logging.getLogger(__name__)


def _key(item: Mapping) -> tuple[str, int, int]:
    return str(item["image"]), int(item["location"][0]), int(item["location"][1])


def _slide_summary(patches: int, sel: ProportionSelection) -> dict[str, Any]:
    """What ``meta["slides"]`` records of one slide's selection."""
    return {
        "patches": patches,
        "sae": sel.sae,
        "tcr": [round(float(v), 6) for v in sel.tcr],
        "pcr": [round(float(v), 6) for v in sel.pcr],
        "positive": sel.n_positive.tolist(),
        "negative": sel.n_negative.tolist(),
    }


class NPLRule:
    """NPL E-step (Tokunaga et al., §3-4; METHODS.md §3) as a rule of :class:`~mixsup_monai.rounds.RoundRunner`.

    Per weak slide (its tumour patches, softmax outputs ``(N, C)`` from the predictor): the columns of the
    proportion classes (demo: the 5 subtypes, not ``non-cancer``) go to ``selector``
    (:class:`~mixsup_monai.methods.npl.ProportionSelector`: PCR vs the slide's ``proportions`` (TCR), SAE,
    NS_c / PS_c, ranking by confidence, conflict rule). Results:

    * pool ``positive``: patches with a positive pseudo label (item key ``label`` = class index in the
      network's classes), oversampled to balanced classes (``oversample``);
    * pool ``negative``: every patch carrying at least one "not c" label, as array ``negative`` ``(M, C)``
      bool -- with ``accumulate=True`` (multi negative, §3.3) the union with the previous round's labels
      (read back from ``previous``, the store's copy), else this round's only (single negative ablation).

    Statistics (``pseudo/`` prefix, logged to MLflow per round): slides, skipped slides, patches, SAE mean /
    max and per slide (``pseudo/sae/<slide>``: SAE of the model that made the labels), positive labels per
    class (before oversampling), new and accumulated negative labels per class. With ``truth_key`` (e.g.
    ``"truth_mask"``, analysis only -- never trained on) also the accuracy of the positive labels and of
    the negative labels against the true patch classes.

    A slide with proportions but no tumour patch (empty prediction) is skipped with a warning naming it.

    A slide is named by its file stem (:func:`~mixsup_monai.methods.npl.slide_name`), never its path: the name keys
    the selector's per-slide random stream (stochastic rounding), the statistics and ``meta["slides"]``, so the same
    cohort in another folder gives the same pseudo labels; two files with one name are refused.

    Args:
        classes: the network's class names (datalist ``classes``).
        proportion_classes: the classes of the proportions (default: all ``classes``).
        selector: the selectivity (default ``ProportionSelector()``: adaptive PS, NS, fraction of the slide).
        accumulate: multi negative (union over rounds) or single negative (this round only).
        oversample: class-balanced oversampling of the positive pool.
        proportions_key: slide key of ``{class: fraction}``.
        truth_key: slide key of a full label map for the accuracy statistics (``None``: off).
        min_known: known share of a patch for its truth class (with ``truth_key``).
    """

    def __init__(
        self,
        classes: Sequence[str],
        proportion_classes: Sequence[str] | None = None,
        selector: ProportionSelector | None = None,
        accumulate: bool = True,
        oversample: bool = True,
        proportions_key: str = "proportions",
        truth_key: str | None = None,
        min_known: float = 0.5,
    ) -> None:
        self.classes = [str(c) for c in classes]
        if len(self.classes) < 2:
            raise ValueError(f"classes must name >= 2 classes, got {self.classes}")
        self.proportion_classes = list(self.classes if proportion_classes is None else proportion_classes)
        unknown = [c for c in self.proportion_classes if c not in self.classes]
        if unknown or len(self.proportion_classes) < 2:
            raise ValueError(
                f"proportion_classes {self.proportion_classes} must be >= 2 of the classes {self.classes}"
                + (f"; unknown: {unknown}" if unknown else "")
            )
        self.columns = [self.classes.index(c) for c in self.proportion_classes]
        self.selector = selector if selector is not None else ProportionSelector()
        self.accumulate = bool(accumulate)
        self.oversample = bool(oversample)
        self.proportions_key = proportions_key
        self.truth_key = truth_key
        self.min_known = float(min_known)

    def config(self) -> dict:
        s = self.selector
        return {
            "rule": "npl",
            "proportion_classes": self.proportion_classes,
            "fraction_of": str(s.fraction_of),
            "rounding": str(s.rounding),
            "adaptive": s.adaptive,
            "positive_threshold": s.positive_threshold,
            "positive": s.positive,
            "negative": s.negative,
            "accumulate": self.accumulate,
            "oversample": self.oversample,
        }

    # ------------------------------------------------------------------ helpers
    def _tcr(self, slide: Mapping) -> list[float]:
        props = slide.get(self.proportions_key)
        name = slide.get("image")
        if not isinstance(props, Mapping) or not props:
            raise ValueError(f"slide {name!r}: no {self.proportions_key!r} ({{class: fraction}}) to select with")
        unknown = sorted(set(props) - set(self.proportion_classes))
        if unknown:
            raise ValueError(
                f"slide {name!r}: {self.proportions_key!r} names {unknown}, not among the proportion classes "
                f"{self.proportion_classes}"
            )
        return [float(props.get(c, 0.0)) for c in self.proportion_classes]

    def _previous_negatives(self, previous: PseudoLabelSet | None) -> dict[tuple[str, int, int], np.ndarray]:
        if previous is None or not self.accumulate or "negative" not in previous.pools:
            return {}
        pool = previous.pools["negative"]
        if not len(pool):
            return {}
        arr = np.asarray(pool.arrays["negative"], dtype=bool)
        if arr.shape != (len(pool), len(self.classes)):
            raise ValueError(
                f"previous negative labels have shape {arr.shape}, expected {(len(pool), len(self.classes))}"
            )
        return {_key(it): arr[i] for i, it in enumerate(pool.items)}

    def _truth(self, pred: SlidePrediction) -> np.ndarray | None:
        path = pred.slide.get(self.truth_key) if self.truth_key else None
        if not path:
            return None
        from mixsup_monai.wsi.cache import get_slide

        wsi = get_slide(pred.slide["image"], pred.slide.get("mpp"))
        ds = float(wsi.info.level_downsamples[int(pred.slide["mask_level"])])
        return patch_labels(
            read_label_map(path), ds, pred.locations, pred.patch_size0, len(self.classes), self.min_known
        )

    # ------------------------------------------------------------------ the rule
    def __call__(
        self,
        predictions: Iterable[SlidePrediction],
        round_index: int,
        previous: PseudoLabelSet | None = None,
        labels: PseudoLabelSet | None = None,
    ) -> PseudoLabelSet:
        """The pools of round ``round_index``; the negative pool is filled slide by slide into ``labels``.

        ``labels`` (default: a new set in memory) is the round runner's set of
        :meth:`~mixsup_monai.rounds.PseudoLabelStore.open_round`, which writes each slide's arrays at once. The
        positive pool is added at the end: its class-balanced oversampling needs every slide's positive labels.
        """
        labels = PseudoLabelSet(round_index) if labels is None else labels
        labels.add("negative", [])
        c_all = len(self.classes)
        cols = torch.as_tensor(self.columns)
        prev = self._previous_negatives(previous)
        pos_items: list[dict] = []
        n_negative = 0
        selections: list[ProportionSelection] = []
        skipped: list[str] = []
        accumulated = np.zeros(c_all, np.int64)
        truth_hits = {"positive": [0, 0], "negative": [0, 0]}
        per_slide: dict[str, dict[str, Any]] = {}
        names = SlideIdentities()  # two files with one name would share a random stream and statistics
        for pred in predictions:
            name, image = names(pred.slide), str(pred.slide.get("image"))
            if len(pred) == 0:
                logger.warning("slide %r has proportions but no tumour patch: skipped", pred.slide.get("image"))
                skipped.append(name)
                continue
            probs = pred.outputs.float()
            if probs.ndim != 2 or probs.shape[1] != c_all:
                raise ValueError(
                    f"slide {pred.slide.get('image')!r}: NPLRule needs (N, {c_all}) class probabilities from the "
                    f"predictor (a classifier with activation='softmax'), got {tuple(probs.shape)}"
                )
            tcr = self._tcr(pred.slide)
            prev_rows = None
            if prev:
                full = np.stack([prev.get(_key(it), np.zeros(c_all, bool)) for it in pred.items])
                prev_rows = torch.from_numpy(full[:, self.columns])
            sel = self.selector(probs[:, cols], tcr, prev_rows, slide_id=image, round_index=round_index, seed_key=name)
            selections.append(sel)
            negative_sub = sel.negative | prev_rows if (prev_rows is not None and self.accumulate) else sel.negative
            negative = np.zeros((len(pred), c_all), bool)
            negative[:, self.columns] = negative_sub.numpy()
            for i in torch.nonzero(sel.positive >= 0).reshape(-1).tolist():
                pos_items.append(training_item(pred, i, label=self.columns[int(sel.positive[i])]))
            rows = np.flatnonzero(negative.any(axis=1))
            labels.add("negative", [training_item(pred, i) for i in rows.tolist()], {"negative": negative[rows]})
            n_negative += len(rows)
            self._count_truth_hits(self._truth(pred), sel, truth_hits)
            accumulated += negative.sum(axis=0)
            per_slide[name] = _slide_summary(len(pred), sel)
        if not selections:
            raise ValueError(f"NPL: none of the weak slides has a tumour patch (skipped: {skipped})")
        unique_positive = len(pos_items)
        if self.oversample:
            pos_items = oversample_by_class(pos_items, "label")
        stats = self._stats(selections, accumulated, skipped, unique_positive, len(pos_items), truth_hits)
        if n_negative == 0:  # the pool's array keeps its (0, C) shape for the next round's union
            labels.pools["negative"] = PseudoLabelPool([], {"negative": np.zeros((0, c_all), bool)})
        labels.add("positive", pos_items)
        labels.pools = {"positive": labels.pools["positive"], "negative": labels.pools["negative"]}  # stored order
        labels.stats = stats
        labels.meta = {**self.config(), "slides": per_slide, "skipped": skipped}
        return labels

    def _count_truth_hits(self, truth: np.ndarray | None, sel: ProportionSelection, hits: dict[str, list[int]]) -> None:
        """Add to ``hits`` the correct / known positive and new negative labels of one slide (with ``truth_key``)."""
        if truth is None:
            return
        for i in torch.nonzero(sel.positive >= 0).reshape(-1).tolist():
            if truth[i] != IGNORE_INDEX:
                hits["positive"][0] += int(truth[i] == self.columns[int(sel.positive[i])])
                hits["positive"][1] += 1
        known = truth != IGNORE_INDEX
        for i, j in zip(*np.nonzero(sel.negative.numpy())):
            if known[i]:
                hits["negative"][0] += int(truth[i] != self.columns[j])
                hits["negative"][1] += 1

    def _stats(
        self,
        selections: Sequence[ProportionSelection],
        accumulated: np.ndarray,
        skipped: Sequence[str],
        unique_positive: int,
        pool_positive: int,
        truth_hits: Mapping[str, Sequence[int]],
    ) -> dict[str, float]:
        pos = torch.stack([s.n_positive for s in selections]).sum(dim=0)
        neg = torch.stack([s.n_negative for s in selections]).sum(dim=0)
        sae = np.asarray([s.sae for s in selections], np.float64)
        out: dict[str, float] = {
            "pseudo/slides": float(len(selections)),
            "pseudo/skipped_slides": float(len(skipped)),
            "pseudo/patches": float(sum(s.n_patches for s in selections)),
            "pseudo/sae_mean": float(sae.mean()),
            "pseudo/sae_max": float(sae.max()),
            "pseudo/positive": float(unique_positive),
            "pseudo/positive_oversampled": float(pool_positive),
            "pseudo/negative": float(neg.sum()),
            "pseudo/negative_accumulated": float(accumulated.sum()),
        }
        for j, name in enumerate(self.proportion_classes):
            out[f"pseudo/positive/{name}"] = float(pos[j])
            out[f"pseudo/negative/{name}"] = float(neg[j])
            out[f"pseudo/negative_accumulated/{name}"] = float(accumulated[self.columns[j]])
        for kind, (hit, total) in truth_hits.items():
            if total:
                out[f"pseudo/{kind}_accuracy"] = hit / total
        for s in selections:
            out[f"pseudo/sae/{slide_name(str(s.slide_id))}"] = float(s.sae)
        return out
