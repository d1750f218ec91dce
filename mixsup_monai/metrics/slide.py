"""Slide-level classification metrics: ROC / AUC, specificity at 100 % sensitivity, weighted kappa."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "roc_points",
    "roc_auc",
    "sensitivity_specificity",
    "specificity_at_sensitivity",
    "slide_classification_metrics",
    "quadratic_weighted_kappa",
    "save_roc_png",
]


def _check(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores must have the same length, got {y.size} and {s.size}")
    if y.size == 0:
        raise ValueError("no slides: labels and scores are empty")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"slide labels must be 0 (negative) or 1 (positive), got values {sorted(set(y.tolist()))}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (got NaN or inf)")
    return y.astype(np.int64), s


def _both_classes(y: np.ndarray, what: str) -> None:
    if y.min() == y.max():
        raise ValueError(f"{what} needs positive and negative slides, got only label {int(y[0])} ({y.size} slides)")


def sensitivity_specificity(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> tuple[float, float]:
    """Sensitivity and specificity when a slide is called positive at ``score >= threshold``.

    Returns:
        ``(sensitivity, specificity)``; NaN for a class with no slides.
    """
    y, s = _check(labels, scores)
    pred = s >= threshold
    pos, neg = y == 1, y == 0
    sens = float(pred[pos].mean()) if pos.any() else float("nan")
    spec = float((~pred[neg]).mean()) if neg.any() else float("nan")
    return sens, spec


def specificity_at_sensitivity(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, sensitivity: float = 1.0
) -> tuple[float, float]:
    """Best specificity among thresholds that keep at least ``sensitivity`` (MixSup's headline: 100 %).

    The threshold is the highest ``t`` such that ``score >= t`` still calls at least ``ceil(sensitivity *
    n_pos)`` positive slides positive: for 100 % it is the lowest positive score. Negative slides scoring
    ``>= t`` are false positives (ties count against the method).

    Returns:
        ``(specificity, threshold)``.
    """
    if not 0.0 < sensitivity <= 1.0:
        raise ValueError(f"sensitivity must lie in (0, 1], got {sensitivity}")
    y, s = _check(labels, scores)
    _both_classes(y, "specificity at sensitivity")
    pos_scores = np.sort(s[y == 1])[::-1]
    needed = int(np.ceil(sensitivity * pos_scores.size - 1e-9))
    threshold = float(pos_scores[max(needed, 1) - 1])
    spec = float((s[y == 0] < threshold).mean())
    return spec, threshold


def roc_points(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)`` over every distinct score (scikit-learn, no point dropped)."""
    from sklearn.metrics import roc_curve

    y, s = _check(labels, scores)
    _both_classes(y, "a ROC curve")
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr, thr


def roc_auc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (ties count one half)."""
    from sklearn.metrics import roc_auc_score

    y, s = _check(labels, scores)
    _both_classes(y, "AUC")
    return float(roc_auc_score(y, s))


def slide_classification_metrics(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Every slide metric a MixSup report shows, as plain floats.

    Returns:
        ``auc``, ``spec_at_100_sens`` and its ``threshold_at_100_sens``, ``sensitivity`` / ``specificity`` /
        ``accuracy`` at ``threshold``, ``n_positive``, ``n_negative``. AUC and specificity at 100 %
        sensitivity are NaN when one class is missing.
    """
    y, s = _check(labels, scores)
    sens, spec = sensitivity_specificity(y, s, threshold)
    out = {
        "n_positive": float((y == 1).sum()),
        "n_negative": float((y == 0).sum()),
        "sensitivity": sens,
        "specificity": spec,
        "accuracy": float(((s >= threshold) == (y == 1)).mean()),
        "auc": float("nan"),
        "spec_at_100_sens": float("nan"),
        "threshold_at_100_sens": float("nan"),
    }
    if y.min() != y.max():
        out["auc"] = roc_auc(y, s)
        out["spec_at_100_sens"], out["threshold_at_100_sens"] = specificity_at_sensitivity(y, s, 1.0)
    return out


def quadratic_weighted_kappa(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int | None = None
) -> float:
    """Cohen's kappa with quadratic weights ``w_ij = (i - j)^2 / (C - 1)^2`` (Camelyon17 pN-stage metric).

    ``kappa = 1 - sum(w * O) / sum(w * E)`` with ``O`` the confusion matrix and ``E`` the outer product of
    its marginals scaled to the same total.

    Args:
        y_true: integer classes ``0..C-1``.
        y_pred: integer classes ``0..C-1``.
        num_classes: ``C`` (default: ``max(y_true, y_pred) + 1``).
    """
    t = np.asarray(y_true).reshape(-1)
    p = np.asarray(y_pred).reshape(-1)
    if t.shape != p.shape or t.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty and of equal length, got {t.size} and {p.size}")
    for name, v in (("y_true", t), ("y_pred", p)):
        if not np.issubdtype(v.dtype, np.integer) or (v < 0).any():
            raise ValueError(f"{name} must hold non-negative integer classes, got {v.tolist()}")
    c = int(num_classes if num_classes is not None else max(t.max(), p.max()) + 1)
    if max(t.max(), p.max()) >= c:
        raise ValueError(f"classes must lie in 0..{c - 1}, got up to {int(max(t.max(), p.max()))}")
    if c < 2:
        raise ValueError("quadratic weighted kappa needs at least 2 classes")
    observed = np.zeros((c, c), np.float64)
    np.add.at(observed, (t, p), 1.0)
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    i, j = np.meshgrid(np.arange(c), np.arange(c), indexing="ij")
    weights = (i - j) ** 2 / (c - 1) ** 2
    denominator = float((weights * expected).sum())
    if denominator == 0.0:
        return 1.0 if float((weights * observed).sum()) == 0.0 else 0.0
    return 1.0 - float((weights * observed).sum()) / denominator


def save_roc_png(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Plot the ROC curve with its AUC and the 100 %-sensitivity operating point; save as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fpr, tpr, _ = roc_points(labels, scores)
    auc = roc_auc(labels, scores)
    spec, thr = specificity_at_sensitivity(labels, scores, 1.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    try:
        ax.plot(fpr, tpr, lw=2, label=f"AUC = {auc:.3f}")
        ax.plot([0, 1], [0, 1], ls="--", lw=1, color="grey")
        ax.scatter([1 - spec], [1.0], color="red", zorder=3, label=f"100 % sens.: spec. {spec:.3f} (t = {thr:.3g})")
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title or "slide-level ROC")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
