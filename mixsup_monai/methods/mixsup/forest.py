"""MixSup multi-class stage 2 (Camelyon17 pN variant): a random forest on morphological features of heat maps."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from mixsup_monai.metrics.slide import quadratic_weighted_kappa
from mixsup_monai.rounds.predict import SlidePatchPredictor, SlidePrediction, stitch_patch_maps
from mixsup_monai.utils.seeds import round_seed

__all__ = ["FEATURE_NAMES", "morphological_features", "RandomForestSlideClassifier"]

logger = logging.getLogger(__name__)

#: the features :func:`morphological_features` returns, in order.
FEATURE_NAMES = (
    "regions",
    "total_area",
    "largest_area",
    "largest_major_axis",
    "largest_solidity",
    "largest_mean_probability",
    "second_area",
    "max_probability",
    "mean_probability",
    "fraction_above_0.9",
)


def morphological_features(prob: np.ndarray, threshold: float = 0.5, pixel_size: float = 1.0) -> np.ndarray:
    """Morphological features of a down-sampled tumour probability map (Li et al., Camelyon17 stage 2).

    Regions are the 8-connected components of ``prob >= threshold``.

    Args:
        prob: ``(H, W)`` probabilities in [0, 1].
        threshold: probability above which a pixel is tumour.
        pixel_size: edge of one map pixel in the unit the areas / lengths should have (e.g. microns).

    Returns:
        ``(len(FEATURE_NAMES),)`` float64: region count, total / largest area, largest region's major axis,
        solidity and mean probability, second-largest area, max and mean probability, fraction of pixels
        above 0.9 (zeros where there is no region).
    """
    from skimage.measure import label, regionprops

    prob = np.asarray(prob, np.float64)
    if prob.ndim != 2:
        raise ValueError(f"expected an (H, W) probability map, got shape {prob.shape}")
    area_unit = pixel_size**2
    regions = regionprops(label(prob >= threshold, connectivity=2), intensity_image=prob)
    regions = sorted(regions, key=lambda r: r.area, reverse=True)
    largest = regions[0] if regions else None
    return np.array(
        [
            len(regions),
            sum(r.area for r in regions) * area_unit,
            largest.area * area_unit if largest else 0.0,
            largest.axis_major_length * pixel_size if largest else 0.0,
            largest.solidity if largest else 0.0,
            largest.intensity_mean if largest else 0.0,
            regions[1].area * area_unit if len(regions) > 1 else 0.0,
            float(prob.max()) if prob.size else 0.0,
            float(prob.mean()) if prob.size else 0.0,
            float((prob >= 0.9).mean()) if prob.size else 0.0,
        ],
        np.float64,
    )


class RandomForestSlideClassifier:
    """Multi-class stage 2: scikit-learn random forest on :func:`morphological_features` of each slide's heat map.

    A round scorer like :class:`~mixsup_monai.methods.mixsup.TopKSlideClassifier`: the round runner calls
    :meth:`observe` for every slide of the prediction pass (the heat map is stitched from θ1's patch maps at
    ``heatmap_downsample`` level-0 pixels per pixel, and reduced to features at once), then
    ``scorer(predictions, round_index)`` fits the forest (balanced class weights, out-of-bag estimates) and
    returns ``stage2_loss`` (out-of-bag log-loss: lower = the round's segmentation explains the slide labels
    better), ``train_kappa`` (out-of-bag quadratic-weighted kappa) and, with validation slides,
    ``val_kappa`` / ``val_accuracy``.

    Args:
        num_classes: number of slide classes (labels ``0..num_classes-1``, e.g. 4 pN-stage slide classes).
        n_estimators: trees.
        threshold: tumour threshold of the morphological features.
        heatmap_downsample: level-0 pixels per heat-map pixel.
        seed: forest seed (combined with the round).
        label_key: slide key of the class label.
        predictor: θ1 over validation slides.
        validation_slides: datalist entries scored after each round.
    """

    def __init__(
        self,
        num_classes: int,
        n_estimators: int = 200,
        threshold: float = 0.5,
        heatmap_downsample: float = 32.0,
        seed: int = 0,
        label_key: str = "label",
        predictor: SlidePatchPredictor | None = None,
        validation_slides: Sequence[Mapping] | None = None,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.n_estimators = int(n_estimators)
        self.threshold = float(threshold)
        self.heatmap_downsample = float(heatmap_downsample)
        self.seed = int(seed)
        self.label_key = label_key
        self.predictor = predictor
        self.validation_slides = [dict(s) for s in validation_slides] if validation_slides else []
        self.forest = None
        self._features: dict[str, np.ndarray] = {}

    def features(self, pred: SlidePrediction) -> np.ndarray:
        """The morphological features of one slide's prediction."""
        heat = stitch_patch_maps(pred, self.heatmap_downsample)
        return morphological_features(heat, self.threshold, pixel_size=self.heatmap_downsample)

    def observe(self, pred: SlidePrediction) -> None:
        """Keep the features of a slide of the current prediction pass (called by the round runner)."""
        self._features[pred.slide["image"]] = self.features(pred)

    def _labels(self, slides: Iterable[Mapping]) -> np.ndarray:
        labels = []
        for s in slides:
            y = s.get(self.label_key)
            if isinstance(y, bool) or not isinstance(y, (int, np.integer)) or not 0 <= y < self.num_classes:
                raise ValueError(
                    f"slide {s.get('image')!r}: key {self.label_key!r} must be a class in 0..{self.num_classes - 1}, "
                    f"got {y!r}"
                )
            labels.append(int(y))
        return np.asarray(labels, np.int64)

    def __call__(self, predictions: Iterable[SlidePrediction], round_index: int = 0) -> dict[str, float]:
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.metrics import log_loss

        preds = list(predictions)
        missing = [p.slide["image"] for p in preds if p.slide["image"] not in self._features]
        if missing:
            raise ValueError(
                f"no features for {len(missing)} slide(s) (e.g. {Path(missing[0]).name}): the runner must call "
                "observe() during the prediction pass"
            )
        x = np.stack([self._features[p.slide["image"]] for p in preds])
        y = self._labels(p.slide for p in preds)
        self._features = {}
        self.forest = RandomForestClassifier(
            n_estimators=self.n_estimators,
            oob_score=True,
            class_weight="balanced",
            random_state=round_seed(self.seed, round_index),
        )
        self.forest.fit(x, y)
        oob = np.nan_to_num(self.forest.oob_decision_function_, nan=1.0 / len(self.forest.classes_))
        full = np.full((len(y), self.num_classes), 1e-6)
        full[:, self.forest.classes_] = np.maximum(oob, 1e-6)
        full /= full.sum(1, keepdims=True)
        out = {
            "stage2_loss": float(log_loss(y, full, labels=list(range(self.num_classes)))),
            "train_kappa": quadratic_weighted_kappa(y, full.argmax(1), self.num_classes),
        }
        if self.validation_slides and self.predictor is not None:
            val = list(self.predictor.predict(self.validation_slides, description=f"round {round_index} validation"))
            vy = self._labels(p.slide for p in val)
            vp = self.forest.predict(np.stack([self.features(p) for p in val]))
            out["val_kappa"] = quadratic_weighted_kappa(vy, vp, self.num_classes)
            out["val_accuracy"] = float((vy == vp).mean())
        return out

    def predict(self, preds: Sequence[SlidePrediction]) -> np.ndarray:
        """Slide classes of new predictions with the fitted forest."""
        if self.forest is None:
            raise RuntimeError("the forest is not fitted yet")
        return self.forest.predict(np.stack([self.features(p) for p in preds]))

    def state_dict(self) -> dict:
        return {"forest": self.forest}

    def load_state_dict(self, state: Mapping) -> None:
        self.forest = state["forest"]
