"""E-step predictor: a network over every tissue patch of many slides, batched, each tile read once."""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from monai.utils import StrEnum, look_up_option, optional_import
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from mixsup_monai.data.patch_dataset import WSIPatchDataset
from mixsup_monai.utils.distributed import is_distributed
from mixsup_monai.wsi.grid import PatchGrid, build_patch_grid
from mixsup_monai.wsi.reader import DEFAULT_BACKENDS, open_slide
from mixsup_monai.wsi.tissue import detect_tissue

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["Activation", "PatchScore", "SlidePrediction", "SlidePatchPredictor", "stitch_patch_maps", "training_item"]

logger = logging.getLogger(__name__)


class Activation(StrEnum):
    """Activation applied to the network output before it is stored or scored."""

    SIGMOID = "sigmoid"
    SOFTMAX = "softmax"
    NONE = "none"


class PatchScore(StrEnum):
    """How one number per patch (used for ranking, e.g. MixSup's top-K) is taken from its output."""

    MAX = "max"
    MEAN = "mean"


@dataclass
class SlidePrediction:
    """The network's output over the tissue patches of one slide.

    Attributes:
        slide: the datalist entry of the slide (``image``, ``label``, ...).
        items: one dict per patch: ``image`` (path), ``location`` ``[x, y]`` (level 0), ``size`` ``[p, p]``
            (pixels of ``level``), ``level``.
        outputs: ``(N, *out)`` activated outputs on the CPU, e.g. ``(N, 1, p, p)`` foreground probabilities.
        scores: ``(N,)`` one number per patch (see :class:`PatchScore`), e.g. the maximum pixel probability.
        downsample: level-0 pixels per pixel of the patch level.
        slide_size: level-0 ``(width, height)``.
    """

    slide: dict
    items: list[dict]
    outputs: torch.Tensor
    scores: torch.Tensor
    downsample: float
    slide_size: tuple[int, int]
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def locations(self) -> np.ndarray:
        """``(N, 2)`` int64 level-0 ``(x, y)`` of the patches."""
        if not self.items:
            return np.zeros((0, 2), np.int64)
        return np.asarray([it["location"] for it in self.items], dtype=np.int64)

    @property
    def patch_size0(self) -> int:
        """Patch edge in level-0 pixels."""
        return int(round(self.items[0]["size"][0] * self.downsample)) if self.items else 0


class SlidePatchPredictor:
    """Run a network over every tissue patch of a list of slides (the E-step of a round).

    Per slide: tissue detection on a low-resolution view (:func:`~mixsup_monai.wsi.detect_tissue`, or the
    slide's ``tissue_mask_key`` file when present) and a patch grid over the tissue
    (:func:`~mixsup_monai.wsi.build_patch_grid`); grids are computed once per slide and kept. The patches
    of all slides then go through one ``DataLoader`` over a :class:`~mixsup_monai.data.WSIPatchDataset`
    (one batched read per slide and batch: every tile is read once), in slide order, with a progress bar,
    and :meth:`predict` yields one :class:`SlidePrediction` per slide as soon as its last patch is done --
    memory holds one slide's outputs, not the cohort's.

    Args:
        network: the model; called on ``(B, 3, p, p)`` float images in [0, 1] (can be replaced per call).
        patch_size: patch edge in pixels of the patch level.
        level: pyramid level of the patches (give ``level`` or ``mpp``).
        mpp: target microns per pixel instead of ``level``.
        overlap: overlap of neighbouring patches in pixels of the patch level.
        min_tissue_fraction: minimum tissue share of a patch.
        tissue_max_size: long side of the view tissue detection runs on.
        tissue_mask_key: slide key of a user tissue mask (any non-zero = tissue) used instead of detection
            (NPL: a tumour mask restricts the patches to tumour).
        batch_size: patches per forward pass.
        num_workers: DataLoader workers (0 = read in the main process).
        device: where the network runs.
        activation: ``"sigmoid"`` (default, one foreground channel), ``"softmax"`` or ``"none"``.
        patch_score: ``"max"`` (default: the maximum pixel probability, MixSup) or ``"mean"``.
        score_channel: channel whose values the patch score uses (``None``: all channels).
        output_dtype: dtype of the stored outputs (``torch.float16`` halves the memory of pixel maps).
        grid_cache_dir: folder where patch grids are cached on disk (``None``: memory only).
        progress: show a progress bar (tqdm).
        backends: reader order for the slides.
        output_dir: folder where each slide's outputs are written batch by batch and handed out memory-mapped
            (``None``: kept in memory). A slide's file is deleted when the next slide is asked for, so memory
            holds a batch and disk one slide -- for pixel maps at scale (512² float16 maps: 0.5 MB per patch).
    """

    def __init__(
        self,
        network: torch.nn.Module | None = None,
        patch_size: int = 64,
        level: int | None = None,
        mpp: float | None = None,
        overlap: int = 0,
        min_tissue_fraction: float = 0.5,
        tissue_max_size: int = 1024,
        tissue_mask_key: str | None = "tissue_mask",
        batch_size: int = 32,
        num_workers: int = 0,
        device: str | torch.device = "cpu",
        activation: Activation | str = Activation.SIGMOID,
        patch_score: PatchScore | str = PatchScore.MAX,
        score_channel: int | None = None,
        output_dtype: torch.dtype = torch.float32,
        grid_cache_dir: str | None = None,
        progress: bool = True,
        backends: Sequence[str] = DEFAULT_BACKENDS,
        output_dir: str | os.PathLike | None = None,
    ) -> None:
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size <= 0:
            raise ValueError(f"patch_size must be a positive int, got {patch_size!r}.")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}.")
        self.network = network
        self.patch_size = patch_size
        self.level = level
        self.mpp = mpp
        self.overlap = int(overlap)
        self.min_tissue_fraction = float(min_tissue_fraction)
        self.tissue_max_size = int(tissue_max_size)
        self.tissue_mask_key = tissue_mask_key
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.device = torch.device(device)
        self.activation = look_up_option(activation, Activation)
        self.patch_score = look_up_option(patch_score, PatchScore)
        self.score_channel = score_channel
        self.output_dtype = output_dtype
        self.grid_cache_dir = grid_cache_dir
        self.progress = progress
        self.backends = tuple(backends)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self._grids: dict[str, tuple[PatchGrid, tuple[int, int]]] = {}

    # ------------------------------------------------------------------ patch grids
    def grid(self, slide: Mapping) -> tuple[PatchGrid, tuple[int, int]]:
        """The tissue patch grid of ``slide`` and its level-0 size (computed once per slide, then kept)."""
        path = slide.get("image")
        if not isinstance(path, str):
            raise ValueError(f"slide entry needs an 'image' path, got {dict(slide)!r}")
        if path not in self._grids:
            user_mask = slide.get(self.tissue_mask_key) if self.tissue_mask_key else None
            with open_slide(path, mpp=slide.get("mpp"), backends=self.backends) as wsi:
                tissue = detect_tissue(wsi, max_size=self.tissue_max_size, user_mask=user_mask)
                grid = build_patch_grid(
                    wsi,
                    tissue,
                    patch_size=self.patch_size,
                    level=self.level,
                    mpp=self.mpp,
                    overlap=self.overlap,
                    min_tissue_fraction=self.min_tissue_fraction,
                    cache_dir=self.grid_cache_dir,
                    skip_empty=True,
                )
                self._grids[path] = (grid, tuple(wsi.dimensions))
        return self._grids[path]

    def items(self, slide: Mapping) -> list[dict]:
        """Patch items of one slide (see :class:`SlidePrediction`)."""
        grid, _ = self.grid(slide)
        items = grid.to_items(slide["image"]) if len(grid) else []
        if slide.get("mpp") is not None:
            for it in items:
                it["mpp"] = slide["mpp"]
        return items

    def count(self, slides: Sequence[Mapping]) -> int:
        """Number of tissue patches over ``slides``."""
        return sum(len(self.grid(s)[0]) for s in slides)

    # ------------------------------------------------------------------ prediction
    def _activate(self, out: torch.Tensor) -> torch.Tensor:
        if self.activation == Activation.SIGMOID:
            return torch.sigmoid(out)
        if self.activation == Activation.SOFTMAX:
            return torch.softmax(out, dim=1)
        return out

    def _score(self, out: torch.Tensor) -> torch.Tensor:
        values = out if self.score_channel is None else out[:, self.score_channel]
        flat = values.reshape(values.shape[0], -1).float()
        return flat.amax(dim=1) if self.patch_score == PatchScore.MAX else flat.mean(dim=1)

    def predict(
        self,
        slides: Sequence[Mapping],
        network: torch.nn.Module | None = None,
        description: str = "predict",
    ) -> Iterator[SlidePrediction]:
        """Yield one :class:`SlidePrediction` per slide of ``slides``, in order.

        Args:
            slides: datalist entries (``image``, optional ``mpp``, ``tissue_mask``, labels ...).
            network: the model to run (default: the one given at construction).
            description: label of the progress bar.
        """
        network = network if network is not None else self.network
        if network is None:
            raise ValueError("SlidePatchPredictor: no network given (pass network= here or at construction).")
        slides = [dict(s) for s in slides]
        per_slide = [self.items(s) for s in slides]
        items = [dict(it, slide_index=i) for i, its in enumerate(per_slide) for it in its]
        for slide, its in zip(slides, per_slide):
            if not its:
                logger.warning("slide %r: no tissue patch, it gets an empty prediction", slide.get("image"))
        meta = [self._grids[s["image"]] for s in slides]

        def empty(i: int) -> SlidePrediction:
            grid, size = meta[i]
            return SlidePrediction(
                slides[i], [], torch.zeros(0), torch.zeros(0), float(grid.downsample), (int(size[0]), int(size[1]))
            )

        if not items:
            for i in range(len(slides)):
                yield empty(i)
            return
        dataset = WSIPatchDataset(items, dtype=torch.float32, backends=self.backends)
        loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
        was_training = network.training
        network.eval()
        sink = _SlideOutputs(per_slide, self.output_dtype, self.output_dir)
        bar = None
        if self.progress and has_tqdm:
            bar = tqdm(total=len(items), desc=description, unit="patch", leave=False)
        try:
            for batch in loader:
                with torch.no_grad():  # only around the forward pass: the caller runs between yields
                    out = self._activate(network(batch["image"].to(self.device))).detach().cpu()
                if bar is not None:
                    bar.update(out.shape[0])
                out = out.to(self.output_dtype)
                for index, outputs, scores in sink.add(out, self._score(out)):  # scores of the stored values
                    if outputs is None:
                        yield empty(index)
                        continue
                    grid, size = meta[index]
                    yield SlidePrediction(
                        slide=slides[index],
                        items=per_slide[index],
                        outputs=outputs,
                        scores=scores,
                        downsample=float(grid.downsample),
                        slide_size=(int(size[0]), int(size[1])),
                    )
        finally:
            if bar is not None:
                bar.close()
            dataset.close()
            sink.close()
            network.train(was_training)
        for index in range(sink.next_slide, len(slides)):
            yield empty(index)

    def predict_across_ranks(
        self,
        slides: Sequence[Mapping],
        folder: str | os.PathLike,
        network: torch.nn.Module | None = None,
        description: str = "predict",
    ) -> Iterator[SlidePrediction]:
        """:meth:`predict` with the slides split across the ``torch.distributed`` ranks; every rank yields them all.

        Rank ``r`` of ``w`` predicts slides ``r, r + w, ...`` and writes each one's outputs and scores to
        ``folder`` (shared by the ranks: on several nodes a shared file system, like the checkpoints); after a
        barrier every rank yields every slide's prediction in ``slides`` order, memory-mapped from there. The
        outputs are those of one process (each patch is predicted alone in eval mode), the network forward and
        reading are split ``w`` ways, and so are the slides' tissue detection and patch grids (each rank builds
        those of its slides and reads the others' from ``folder``). Outside a process group this is :meth:`predict`.
        Delete ``folder`` when done.

        Args:
            slides: datalist entries, the same list on every rank.
            folder: where the ranks put their slides' outputs (created; an empty or new folder).
            network: the model (a ``DistributedDataParallel`` wrapper is unwrapped: ranks predict different
                numbers of batches, and the wrapper's collective calls would wait for each other).
            description: label of the progress bar.
        """
        network = network if network is not None else self.network
        if not is_distributed():
            yield from self.predict(slides, network, description)
            return
        network = getattr(network, "module", network) if isinstance(network, DistributedDataParallel) else network
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        slides = [dict(s) for s in slides]
        mine = list(range(rank, len(slides), world))
        own = [slides[i] for i in mine]
        for index, pred in zip(mine, self.predict(own, network, f"{description} (rank {rank})")):
            grid, size = self.grid(pred.slide)  # for the other ranks: they need not detect this slide's tissue
            grid.save(folder / f"slide_{index:05d}.grid.npz")
            np.save(folder / f"slide_{index:05d}.size.npy", np.asarray(size, np.int64))
            if len(pred):
                np.save(folder / f"slide_{index:05d}.scores.npy", pred.scores.numpy())
                np.save(folder / f"slide_{index:05d}.npy", pred.outputs.numpy())
        torch.distributed.barrier()
        for index, slide in enumerate(slides):
            if slide["image"] not in self._grids:  # another rank's slide: its grid as that rank built it
                size = tuple(int(v) for v in np.load(folder / f"slide_{index:05d}.size.npy"))
                self._grids[slide["image"]] = (PatchGrid.load(folder / f"slide_{index:05d}.grid.npz"), size)
            items = self.items(slide)
            grid, size = self.grid(slide)
            outputs = scores = torch.zeros(0)
            if items:
                with warnings.catch_warnings():  # a read-only map: nothing writes it
                    warnings.simplefilter("ignore", UserWarning)
                    outputs = torch.from_numpy(np.load(folder / f"slide_{index:05d}.npy", mmap_mode="r"))
                scores = torch.from_numpy(np.load(folder / f"slide_{index:05d}.scores.npy"))
            yield SlidePrediction(slide, items, outputs, scores, float(grid.downsample), (int(size[0]), int(size[1])))

    __call__ = predict


class _SlideOutputs:
    """Collects batches of patch outputs (in slide order) and hands out each slide's once it is complete.

    In memory, or with ``folder`` in one ``.npy`` per slide appended batch by batch and handed out memory-mapped
    (read-only); the file of a slide is deleted when the next batch arrives after it was handed out (the consumer
    has moved on; a view it kept stays valid, unlinked files stay mapped).
    """

    def __init__(self, per_slide: Sequence[Sequence], dtype: torch.dtype, folder: Path | None) -> None:
        self.sizes = [len(p) for p in per_slide]
        self.dtype = dtype
        self.folder = None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(prefix=".predict.", dir=folder))
        self.next_slide, self.filled = 0, 0
        self.outputs: list[torch.Tensor] | BinaryIO | None = None
        self.scores: list[torch.Tensor] = []
        self.handed_out: list[Path] = []

    def add(self, outputs: torch.Tensor, scores: torch.Tensor) -> Iterator[tuple[int, torch.Tensor | None, Any]]:
        """Take a batch; per slide it completes yield ``(slide index, outputs, scores)`` (``None`` without patches)."""
        for old in self.handed_out:
            old.unlink(missing_ok=True)
        self.handed_out = []
        while len(outputs) or (self.next_slide < len(self.sizes) and self.sizes[self.next_slide] == 0):
            if self.next_slide >= len(self.sizes):  # pragma: no cover - the loader yields exactly the patches
                raise RuntimeError("more outputs than patches")
            n = self.sizes[self.next_slide]
            if n == 0:
                yield self.next_slide, None, None
                self.next_slide += 1
                continue
            take = min(n - self.filled, len(outputs))
            self._write(outputs[:take])
            self.scores.append(scores[:take])
            outputs, scores = outputs[take:], scores[take:]
            self.filled += take
            if self.filled == n:
                yield self.next_slide, self._slide_outputs(), torch.cat(self.scores)
                self.next_slide, self.filled, self.outputs, self.scores = self.next_slide + 1, 0, None, []

    def _write(self, rows: torch.Tensor) -> None:
        if self.folder is None:
            self.outputs = [*(self.outputs or []), rows]
            return
        if self.outputs is None:  # appended with write(), not through a writable map: no dirty mapped pages
            self.outputs = open(self.folder / f"slide_{self.next_slide:05d}.npy", "wb")  # noqa: SIM115 - closed below
            header = {"descr": np.lib.format.dtype_to_descr(rows.numpy().dtype), "fortran_order": False}
            header["shape"] = (self.sizes[self.next_slide], *rows.shape[1:])
            np.lib.format.write_array_header_1_0(self.outputs, header)
        self.outputs.write(np.ascontiguousarray(rows.numpy()).tobytes())

    def _slide_outputs(self) -> torch.Tensor:
        if self.folder is None:
            return torch.cat(self.outputs) if len(self.outputs) > 1 else self.outputs[0]
        self.outputs.close()
        file = Path(self.outputs.name)
        self.handed_out.append(file)
        with warnings.catch_warnings():  # torch warns that the read-only map cannot be written; nothing writes it
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(np.load(file, mmap_mode="r"))

    def close(self) -> None:
        if hasattr(self.outputs, "close"):  # stopped in the middle of a slide
            self.outputs.close()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def stitch_patch_maps(
    prediction: SlidePrediction,
    out_downsample: float,
    channel: int = 0,
    values: torch.Tensor | np.ndarray | None = None,
    reduce: Callable[[np.ndarray, np.ndarray], np.ndarray] = np.maximum,
) -> np.ndarray:
    """Paste per-patch maps (or one value per patch) into one slide-level map.

    Args:
        prediction: the slide's :class:`SlidePrediction`.
        out_downsample: level-0 pixels per pixel of the result.
        channel: channel of ``prediction.outputs`` shown.
        values: optional ``(N,)`` or ``(N, C, h, w)`` values to paste instead of ``prediction.outputs``.
        reduce: how overlapping patches combine (default: maximum).

    Returns:
        ``(H, W)`` float32 map of ``ceil(height / out_downsample) x ceil(width / out_downsample)``; 0 where
        no patch was predicted.
    """
    if out_downsample <= 0:
        raise ValueError(f"out_downsample must be > 0, got {out_downsample!r}.")
    w0, h0 = prediction.slide_size
    out = np.zeros((max(1, math.ceil(h0 / out_downsample)), max(1, math.ceil(w0 / out_downsample))), np.float32)
    if len(prediction) == 0:
        return out
    data = prediction.outputs if values is None else values
    data = torch.as_tensor(np.asarray(data) if not torch.is_tensor(data) else data).float()
    side = prediction.patch_size0 / out_downsample  # patch edge in output pixels
    cells = max(1, int(round(side)))
    if data.ndim >= 3:
        maps = data[:, channel] if data.ndim == 4 else data
        maps = F.interpolate(maps[:, None], size=(cells, cells), mode="area" if maps.shape[-1] >= cells else "nearest")
        tiles = maps[:, 0].numpy()
    else:
        vals = data if data.ndim == 1 else data[:, channel]
        tiles = np.broadcast_to(vals.numpy()[:, None, None], (len(vals), cells, cells))
    for (x, y), tile in zip(prediction.locations, tiles):
        c0, r0 = int(round(x / out_downsample)), int(round(y / out_downsample))
        r1, c1 = min(out.shape[0], r0 + cells), min(out.shape[1], c0 + cells)
        if r1 <= r0 or c1 <= c0:
            continue
        out[r0:r1, c0:c1] = reduce(out[r0:r1, c0:c1], tile[: r1 - r0, : c1 - c0])
    return out


def training_item(pred: SlidePrediction, index: int, **extra: Any) -> dict:
    """The M-step item of patch ``index`` of ``pred``: slide path, level-0 box (``location``, ``size``), level."""
    it = pred.items[index]
    size0 = int(round(it["size"][0] * pred.downsample))
    out = {
        "image": it["image"],
        "location": [int(it["location"][0]), int(it["location"][1])],
        "size": [size0, size0],
        "level": int(it.get("level", 0)),
    }
    if it.get("mpp") is not None:
        out["mpp"] = it["mpp"]
    out.update(extra)
    return out
