"""Ignite handler saving per-round heat maps of a few training slides (MixSup Fig. 7) and a montage."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixsup_monai.rounds.predict import stitch_patch_maps
from mixsup_monai.rounds.runner import RoundEvents
from mixsup_monai.utils.distributed import is_rank0
from mixsup_monai.visualize.overlay import heatmap_overlay, save_png
from mixsup_monai.wsi.cache import get_slide

__all__ = ["RoundHeatmapSaver"]


def _colour_map(prob: np.ndarray) -> np.ndarray:
    """``(H, W)`` probabilities as a ``(H, W, 3)`` uint8 'jet' picture (0 = dark blue, 1 = dark red)."""
    import matplotlib

    return (matplotlib.colormaps["jet"](np.clip(prob, 0, 1))[..., :3] * 255).astype(np.uint8)


logger = logging.getLogger(__name__)


class RoundHeatmapSaver:
    """Save the heat map of chosen training slides at every round's prediction pass.

    Listens to :attr:`~mixsup_monai.rounds.RoundEvents.SLIDE_PREDICTED`; for each chosen slide it stitches
    the patch probability maps (:func:`~mixsup_monai.rounds.stitch_patch_maps`) onto a thumbnail and writes
    ``output_dir/round_XX/<slide>_y<label>.png`` (overlay) and ``<slide>_y<label>_prob.png`` (the probability
    map alone, jet colours), XX = the round of the model that predicted. At ``COMPLETED`` it writes
    ``output_dir/montage.png`` (:meth:`montage`): one row per slide (positives first), the thumbnail then one
    probability map per round found on disk, rounds loaded by a resumed runner included -- the paper's Fig. 7,
    where positive slides should grow and negative slides fade to zero.
    Rank 0 only.

    Args:
        output_dir: folder of the PNGs.
        slides: slide files (paths or file names) to draw; default: the first ``per_class`` positive and
            negative slides of the runner, slides without pixel labels first.
        per_class: slides per label when ``slides`` is not given.
        max_size: long side of the saved images in pixels.
        label_key: slide key of the label (for file names and the default choice).
        channel: output channel drawn.
    """

    def __init__(
        self,
        output_dir: str,
        slides: Sequence[str] | None = None,
        per_class: int = 2,
        max_size: int = 256,
        label_key: str = "label",
        channel: int = 0,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.slides = None if slides is None else {Path(s).name for s in slides}
        self.per_class = per_class
        self.max_size = int(max_size)
        self.label_key = label_key
        self.channel = channel
        self.saved: dict[str, dict[int, Path]] = {}
        self.thumbnails: dict[str, np.ndarray] = {}
        #: the rounds (columns) of the last montage written.
        self.montage_rounds: list[int] = []

    def attach(self, engine: Any) -> None:
        if self.slides is None:
            chosen: list[str] = []
            for label in (1, 0):
                # slides without pixel labels first: their maps show what the pseudo labels alone do
                slides = sorted((s for s in engine.slides if s.get(self.label_key) == label), key=lambda s: "mask" in s)
                chosen += [Path(s["image"]).name for s in slides[: self.per_class]]
            self.slides = set(chosen)
        if not engine.has_event_handler(self.slide_predicted, RoundEvents.SLIDE_PREDICTED):
            engine.add_event_handler(RoundEvents.SLIDE_PREDICTED, self.slide_predicted)
        from ignite.engine import Events

        if not engine.has_event_handler(self.completed, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def slide_predicted(self, engine: Any) -> None:
        pred = engine.state.slide_prediction
        name = Path(pred.slide["image"]).name
        if not is_rank0() or name not in (self.slides or ()) or len(pred) == 0:
            return
        round_index = int(getattr(engine.state, "prediction_round", engine.state.round))
        w0, h0 = pred.slide_size
        downsample = max(w0, h0) / self.max_size
        prob = stitch_patch_maps(pred, downsample, channel=self.channel)
        thumb = get_slide(pred.slide["image"], pred.slide.get("mpp")).read_scaled(
            location=(0, 0), size=(w0, h0), out_size=(prob.shape[1], prob.shape[0])
        )
        stem = self._stem(pred.slide)
        folder = self.output_dir / f"round_{round_index:02d}"
        path = save_png(heatmap_overlay(thumb, prob, alpha=0.6), folder / f"{stem}.png")
        save_png(_colour_map(prob), folder / f"{stem}_prob.png")
        self.thumbnails[stem] = thumb
        self.saved.setdefault(stem, {})[round_index] = path

    def _stem(self, slide: Any) -> str:
        return f"{Path(slide['image']).stem}_y{slide.get(self.label_key, 'x')}"

    def _rounds_on_disk(self, stems: Sequence[str], completed: int | None) -> dict[str, dict[int, Path]]:
        """``{stem: {round: overlay path}}`` of the heat maps in ``output_dir/round_XX`` (rounds ``< completed``)."""
        found: dict[str, dict[int, Path]] = {stem: {} for stem in stems}
        for folder in sorted(self.output_dir.glob("round_*")):
            suffix = folder.name[len("round_") :]
            if not folder.is_dir() or not suffix.isdigit():
                continue
            r = int(suffix)
            if completed is not None and r >= completed:
                continue  # a folder of an earlier run in output_dir with more rounds than this run has
            for stem in stems:
                if (folder / f"{stem}_prob.png").is_file():
                    found[stem][r] = folder / f"{stem}.png"
        return {stem: per for stem, per in found.items() if per}

    def _thumbnail(self, stem: str, slide: Any, shape: tuple[int, int]) -> np.ndarray:
        """The slide's thumbnail (read once per process) at the ``(H, W)`` of its heat maps."""
        thumb = self.thumbnails.get(stem)
        if thumb is None or thumb.shape[:2] != shape:
            if slide is None:  # a slide no longer in the runner's list: a blank tile keeps the columns aligned
                return np.full((*shape, 3), 255, np.uint8)
            thumb = get_slide(slide["image"], slide.get("mpp")).read_scaled(out_size=(shape[1], shape[0]))
            self.thumbnails[stem] = thumb
        return thumb

    def montage(self, engine: Any) -> tuple[Path | None, list[int]]:
        """Write ``output_dir/montage.png`` from every round's heat maps on disk (also rounds of an earlier process).

        A resumed runner predicts only the rounds after the resume; the heat maps of the rounds it loaded are
        on disk from the process that ran them, so the montage is built from the files, not from this
        process's predictions. Rounds are those of the runner's completed rounds (``engine.records``).

        Returns:
            The montage's path (``None`` when no heat map was found) and its rounds (one column each).
        """
        from PIL import Image

        slides = {
            self._stem(s): s for s in getattr(engine, "slides", ()) if Path(s["image"]).name in (self.slides or ())
        }
        records = getattr(engine, "records", None)
        found = self._rounds_on_disk(sorted(set(slides) | set(self.saved)), None if records is None else len(records))
        if not found:
            return None, []
        rounds = sorted({r for per in found.values() for r in per})
        rows = []
        for stem in sorted(found, key=lambda s: (not s.endswith("_y1"), s)):
            probs = {
                r: np.asarray(Image.open(path.with_name(f"{path.stem}_prob.png")).convert("RGB"))
                for r, path in found[stem].items()
            }
            shape = next(iter(probs.values())).shape[:2]
            thumb = self._thumbnail(stem, slides.get(stem), shape)
            tiles = [thumb] + [probs.get(r, np.full_like(thumb, 255)) for r in rounds]
            height = max(t.shape[0] for t in tiles)
            tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), constant_values=255) for t in tiles]
            gap = np.full((height, 4, 3), 255, np.uint8)
            rows.append(np.concatenate([x for t in tiles for x in (t, gap)], axis=1))
            rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
        path = save_png(np.concatenate(rows, axis=0), self.output_dir / "montage.png")
        logger.info("round heat maps (rows: slides %s; columns: rounds %s) in %s", sorted(found), rounds, path)
        return path, rounds

    def completed(self, engine: Any) -> None:
        if is_rank0():
            _, self.montage_rounds = self.montage(engine)
