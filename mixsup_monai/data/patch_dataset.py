"""A map-style dataset of whole-slide patches that reads each DataLoader batch with one batched read per slide."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, Dataset, RandomSampler, Sampler, SequentialSampler

from mixsup_monai.wsi.reader import DEFAULT_BACKENDS, Slide, open_slide

__all__ = ["WSIPatchDataset", "PatchBatchSampler", "collate_patches"]

logger = logging.getLogger(__name__)


_MAX_PENDING = 2  # batches read ahead at most


def _in_worker() -> bool:
    return torch.utils.data.get_worker_info() is not None


class _BufferPool:
    """Reusable batch buffers for the main process.

    A fresh 12.5 MB buffer per 64 x 256 px batch costs ~1900 page faults (~17 % of the loader's time
    measured here) because the previous batch is still alive when the next one is read. A buffer is
    handed out again only when nothing but the pool references it: every tensor or array viewing it
    (``torch.from_numpy``, its views, the collated batch) holds a reference to the numpy base array.
    """

    def __init__(self, max_buffers: int = 4):
        self.max_buffers = max_buffers
        self.buffers: list[np.ndarray] = []
        probe = [np.empty(1)]
        self._idle_refs = sys.getrefcount(probe[0])  # same expression as in get(): robust to interpreter changes

    def get(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        for i in range(len(self.buffers)):
            if (
                self.buffers[i].shape == shape
                and self.buffers[i].dtype == dtype
                and sys.getrefcount(self.buffers[i]) == self._idle_refs
            ):
                return self.buffers[i]
        buffer = np.empty(shape, dtype)
        if len(self.buffers) < self.max_buffers:
            self.buffers.append(buffer)
        return buffer


class WSIPatchDataset(Dataset):
    """Patches of whole-slide images, as dictionaries, for a ``torch.utils.data.DataLoader``.

    Each item describes one patch::

        {"image": "/path/slide.svs", "location": [x, y], "size": [w, h], "level": 0, ...}

    with ``location`` the level-0 top-left corner and ``size`` in pixels of ``level`` (the format of
    :meth:`mixsup_monai.wsi.grid.PatchGrid.to_items`). The returned dictionary holds every key of the
    item, with ``image_key`` replaced by a ``(3, h, w)`` channel-first tensor -- **uint8 0-255 by
    default** (4x less memory and IPC than float; add ``ScaleIntensityRanged(a_min=0, a_max=255, b_min=0,
    b_max=1)`` or pass ``dtype=torch.float32`` for floats in [0, 1]) -- and ``location`` / ``size`` as
    int64 numpy arrays so that collation gives ``(B, 2)`` tensors. Other keys pass through unchanged.
    ``transform`` (e.g. a MONAI ``Compose`` of dictionary transforms) is applied to each item last.

    Memory layout: the ``(3, h, w)`` tensors are channel-first in shape but keep the decoder's
    interleaved RGB memory (strides ``(1, 3w, 3)``); batched with :func:`collate_patches` they are a
    ``(B, 3, h, w)`` tensor in ``torch.channels_last`` memory format, which convolutions take as is.
    This skips a transpose that costs ~10 % of the throughput; code that needs ``.view()`` on the image
    should call ``.contiguous()`` or construct the dataset with ``contiguous=True``.

    Batches: a ``DataLoader`` with ``batch_size`` calls :meth:`__getitems__` with the batch's indices;
    they are grouped by slide, level and size, each group is read with one
    :meth:`~mixsup_monai.wsi.reader.Slide.read_regions` call (parallel decoding threads), straight into
    one ``(B, 3, h, w)`` buffer. With ``collate_fn=collate_patches`` that buffer *is* the batch (no
    copy); ``default_collate`` / MONAI's ``list_data_collate`` also work, with one extra copy.

    Fastest set-up measured here (2 cores, 0.93-0.99 of cuCIM's raw batch reader, see
    ``benchmarks/RESULTS_wsi.md``)::

        loader = DataLoader(ds, batch_sampler=PatchBatchSampler(ds, 64, shuffle=True), collate_fn=collate_patches)

    with ``num_workers=0``: decoding releases the GIL, so ``reader_workers`` threads use every core,
    :class:`PatchBatchSampler` has the next batch read while the current one is used, and no batch has
    to cross processes (a fork worker pays ~13 ms per 12.5 MB batch to move it through shared memory:
    0.6 of raw). Use worker processes when per-item Python ``transform`` work is heavy.

    Slides are opened lazily, once per process, and the cache is reset when the process id changes:
    reader handles neither pickle nor survive ``fork`` (tifffile/OpenSlide handles break in forked
    children). DataLoader workers must use ``fork`` (``multiprocessing_context="fork"``, the Linux
    default before Python 3.14), like MONAI's WSI datasets; the dataset pickles without its handles,
    so ``spawn`` also works but starts slowly (each worker re-imports torch and MONAI).

    Args:
        items: patch dictionaries as above.
        transform: callable applied to each output dictionary.
        backends: reader order for :func:`~mixsup_monai.wsi.reader.open_slide`.
        image_key: key of the slide path in the items, and of the patch tensor in the output.
        dtype: ``torch.uint8`` (default, values 0-255) or a floating dtype (values scaled to [0, 1]).
        reader_workers: decoding threads per batch (default ``min(2, cpu count)`` in the main process and
            1 inside DataLoader workers, where the processes already give the parallelism).
        mpp_key: item key holding a level-0 MPP override passed to ``open_slide`` (e.g. ``"mpp"``).
        max_open_slides: how many slides each process keeps open (least recently used are closed).
        contiguous: return standard contiguous ``(3, h, w)`` tensors instead of channels-last strided ones
            (costs one transpose per patch: ~10 % of the throughput here).
    """

    def __init__(
        self,
        items: Sequence[Mapping],
        transform: Callable | None = None,
        backends: Sequence[str] = DEFAULT_BACKENDS,
        image_key: str = "image",
        dtype: torch.dtype = torch.uint8,
        reader_workers: int | None = None,
        mpp_key: str | None = "mpp",
        max_open_slides: int = 64,
        contiguous: bool = False,
    ):
        self.items = list(items)
        for i in sorted({0, len(self.items) - 1} - {-1}):
            missing = [k for k in (image_key, "location", "size") if k not in self.items[i]]
            if missing:
                raise ValueError(
                    f"WSIPatchDataset: item {i} lacks {missing}; expected {{{image_key!r}: path, 'location': "
                    f"[x, y], 'size': [w, h], 'level': int}}, got keys {sorted(self.items[i])}"
                )
        if dtype != torch.uint8 and not dtype.is_floating_point:
            raise ValueError(f"WSIPatchDataset: dtype must be torch.uint8 or a floating dtype, got {dtype}")
        self.transform = transform
        self.backends = tuple(backends)
        self.image_key = image_key
        self.dtype = dtype
        self.reader_workers = reader_workers
        self.mpp_key = mpp_key
        self.max_open_slides = max_open_slides
        self.contiguous = contiguous
        self._reset()

    def _reset(self) -> None:
        self._slides: dict[tuple, Slide] = {}
        self._pool = _BufferPool()
        self._pending: dict[tuple, tuple] = {}
        self._retired: list[Slide] = []
        self._pid = os.getpid()

    # ------------------------------------------------------------------ process-local state
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        # handles, buffers and reads in flight stay in this process
        state.update(_slides={}, _pool=None, _pending={}, _retired=[])
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            # forked child: the parent's handles are not usable here (and must not be closed from here)
            self._reset()

    def _slide(self, path: str, mpp: float | None) -> Slide:
        self._check_process()
        key = (path, mpp)
        slide = self._slides.pop(key, None)
        if slide is None:
            slide = open_slide(path, mpp=mpp, backends=self.backends)
            while len(self._slides) >= self.max_open_slides:
                # closed later, by _close_retired: a background read may still be using it
                self._retired.append(self._slides.pop(next(iter(self._slides))))
        self._slides[key] = slide  # re-inserted last: dict order is the LRU order
        return slide

    def close(self) -> None:
        """Close the slides this process opened."""
        if os.getpid() == self._pid:
            self._drain()
            for slide in [*self._slides.values(), *self._retired]:
                slide.close()
        self._slides, self._pending, self._retired = {}, {}, []

    def _workers(self) -> int:
        if self.reader_workers is not None:
            return self.reader_workers
        return 1 if _in_worker() else min(2, os.cpu_count() or 1)

    def _buffer(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised batch tensor: pooled in the main process, in shared memory inside workers.

        Inside workers, writing the patches straight into shared memory (and :func:`collate_patches`
        returning it as is) saves the copy into shared memory ``default_collate`` makes per batch.
        """
        if not _in_worker():
            self._check_process()
            return torch.from_numpy(self._pool.get(shape, torch.empty(0, dtype=dtype).numpy().dtype))
        numel = int(np.prod(shape))
        try:
            storage = torch.UntypedStorage._new_shared(numel * dtype.itemsize)
            return torch.empty(0, dtype=dtype).set_(storage).view(shape)
        except (AttributeError, RuntimeError):  # private API gone: the public way (one extra copy)
            return torch.empty(shape, dtype=dtype).share_memory_()

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self.items)

    def _key(self, index: int) -> tuple:
        item = self.items[index]
        size = item["size"]
        mpp = item.get(self.mpp_key) if self.mpp_key else None
        return (str(item[self.image_key]), mpp, int(item.get("level", 0)), int(size[0]), int(size[1]))

    def _output(self, index: int, patch: torch.Tensor) -> dict:
        item = self.items[index]
        out = dict(item)
        out[self.image_key] = patch
        out["location"] = np.asarray(item["location"], dtype=np.int64)
        out["size"] = np.asarray(item["size"], dtype=np.int64)
        if self.transform is not None:
            out = self.transform(out)
        return out

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        path, mpp, level, w, h = self._key(index)
        rgb = self._slide(path, mpp).read_region(self.items[index]["location"], (w, h), level)
        patch = torch.from_numpy(rgb).permute(2, 0, 1)
        if self.contiguous:
            patch = patch.contiguous()
        self._close_retired()
        if self.dtype != torch.uint8:
            patch = patch.to(self.dtype).div_(255.0)
        return self._output(index, patch)

    def _start(self, indices: tuple[int, ...]) -> tuple[torch.Tensor, list] | None:
        """Start reading a batch whose patches share one size: ``(buffer, jobs)``; ``None`` for mixed sizes."""
        groups: dict[tuple, list[int]] = {}
        for pos, index in enumerate(indices):
            groups.setdefault(self._key(index), []).append(pos)
        sizes = {(key[4], key[3]) for key in groups}
        if len(sizes) != 1:
            return None
        h, w = next(iter(sizes))
        shape = (len(indices), 3, h, w) if self.contiguous else (len(indices), h, w, 3)
        buffer = self._buffer(shape, torch.uint8)
        jobs = [
            self._slide(path, mpp).read_regions(
                [self.items[indices[p]]["location"] for p in positions],
                (w, h),
                level,
                num_workers=self._workers(),
                out=buffer.numpy(),
                out_index=positions,
                channels_first=self.contiguous,
                background=True,
            )
            for (path, mpp, level, w, h), positions in groups.items()
        ]
        return buffer, jobs

    def prefetch(self, indices: Sequence[int]) -> None:
        """Start reading the batch ``indices`` in the background threads; :meth:`__getitems__` collects it.

        Called by :class:`PatchBatchSampler` one batch ahead, so that the reading threads never wait for
        the main thread between batches. Only meaningful when ``__getitems__`` runs in this process
        (DataLoader ``num_workers=0``); a no-op inside DataLoader workers.
        """
        if _in_worker():
            return
        self._check_process()
        key = tuple(int(i) for i in indices)
        if key in self._pending:
            return
        while len(self._pending) >= _MAX_PENDING:  # never collected (sampler used elsewhere): let it finish
            for job in self._pending.pop(next(iter(self._pending)))[1]:
                job.result()
        started = self._start(key)
        if started is not None:
            self._pending[key] = started

    def _drain(self) -> None:
        for _, jobs in self._pending.values():
            for job in jobs:
                job.result()

    def _close_retired(self) -> None:
        if self._retired:
            self._drain()
            for slide in self._retired:
                slide.close()
            self._retired = []

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """Read a whole batch: one :meth:`Slide.read_regions` per (slide, level, size) group.

        When all patches have the same size they are written into one batch buffer, whose per-item views
        :func:`collate_patches` turns back into the batch without copying. A batch announced with
        :meth:`prefetch` is already being read.

        Args:
            indices: dataset indices of the batch.

        Returns:
            The items' dictionaries in the order of ``indices``.
        """
        key = tuple(int(i) for i in indices)
        self._check_process()
        started = self._pending.pop(key, None) or self._start(key)
        if started is not None:  # the usual case: one buffer for the whole batch, written in place
            buffer, jobs = started
            for job in jobs:
                job.result()
            if self.dtype != torch.uint8:
                scaled = self._buffer(tuple(buffer.shape), self.dtype)
                torch.div(buffer, 255.0, out=scaled)
                buffer = scaled
            if not self.contiguous:
                buffer = buffer.permute(0, 3, 1, 2)  # (B, 3, h, w) view, channels-last memory
            patches = list(buffer.unbind(0))
        else:
            groups: dict[tuple, list[int]] = {}
            for pos, index in enumerate(key):
                groups.setdefault(self._key(index), []).append(pos)
            patches = [None] * len(key)
            for (path, mpp, level, w, h), positions in groups.items():
                group = self._slide(path, mpp).read_regions(
                    [self.items[key[p]]["location"] for p in positions],
                    (w, h),
                    level,
                    num_workers=self._workers(),
                    channels_first=self.contiguous,
                )
                for j, p in enumerate(positions):
                    patch = torch.from_numpy(group[j])
                    patch = patch if self.contiguous else patch.permute(2, 0, 1)
                    patches[p] = patch if self.dtype == torch.uint8 else patch.to(self.dtype).div_(255.0)
        self._close_retired()
        return [self._output(index, patch) for index, patch in zip(key, patches)]


class PatchBatchSampler(Sampler[list[int]]):
    """Batches of a sampler, each announced to the dataset one batch ahead (:meth:`WSIPatchDataset.prefetch`).

    With ``DataLoader(dataset, batch_sampler=PatchBatchSampler(dataset, 64, shuffle=True),
    collate_fn=collate_patches)`` and ``num_workers=0``, the decoding threads read batch ``k + 1`` while
    the main thread collates and consumes batch ``k`` -- as cuCIM's own streaming batch reader does --
    instead of idling at every batch boundary. With worker processes it behaves like a plain
    ``BatchSampler`` (the workers already overlap batches).

    Args:
        dataset: the :class:`WSIPatchDataset` the loader reads.
        batch_size: patches per batch.
        shuffle: random order (``RandomSampler``) instead of sequential; ignored when ``sampler`` is given.
        drop_last: drop the last incomplete batch.
        sampler: a sampler of dataset indices to batch (e.g. a weighted or distributed sampler).
        generator: random generator of the ``RandomSampler``.
    """

    def __init__(
        self,
        dataset: WSIPatchDataset,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        sampler: Sampler[int] | Iterable[int] | None = None,
        generator: torch.Generator | None = None,
    ):
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        self.dataset = dataset
        self.batch_sampler = BatchSampler(sampler, batch_size, drop_last)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[int]]:
        batches = iter(self.batch_sampler)
        upcoming = next(batches, None)
        if upcoming is not None:
            self.dataset.prefetch(upcoming)
        while upcoming is not None:
            current, upcoming = upcoming, next(batches, None)
            if upcoming is not None:
                self.dataset.prefetch(upcoming)
            yield current


def _is_dense(t: torch.Tensor) -> bool:
    """Whether ``t`` occupies exactly ``t.numel()`` consecutive elements (any dimension order)."""
    expected = 1
    for stride, size in sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz > 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _stacked_view(tensors: Sequence) -> torch.Tensor | None:
    """``tensors`` as one ``(B, ...)`` view when they are consecutive, equally laid-out dense blocks of one storage."""
    first = tensors[0]
    if not all(type(t) is torch.Tensor for t in tensors) or not _is_dense(first):
        return None
    ptr, numel, offset, stride = (
        first.untyped_storage().data_ptr(),
        first.numel(),
        first.storage_offset(),
        first.stride(),
    )
    for i, t in enumerate(tensors):
        if (
            t.untyped_storage().data_ptr() != ptr
            or t.shape != first.shape
            or t.dtype != first.dtype
            or t.stride() != stride
            or t.storage_offset() != offset + i * numel
        ):
            return None
    return torch.as_strided(first, (len(tensors), *first.shape), (numel, *stride), offset)


def collate_patches(batch: Sequence[Mapping], image_key: str = "image") -> dict:
    """Collate :class:`WSIPatchDataset` outputs without copying the patches of a batch read together.

    Equivalent to ``monai.data.list_data_collate`` (and falls back to it), but when the ``image_key``
    tensors are the consecutive views :meth:`WSIPatchDataset.__getitems__` makes, the batch tensor is
    that buffer itself: no 12.5 MB copy per 64 x 256 px batch (into shared memory, ~13 ms, inside
    workers). Use ``DataLoader(dataset, batch_size=..., collate_fn=collate_patches)``.

    Args:
        batch: list of item dictionaries.
        image_key: key of the patch tensors.

    Returns:
        A dictionary of batched values, ``image_key`` -> ``(B, 3, h, w)`` (``torch.channels_last`` memory
        unless the dataset was built with ``contiguous=True``).
    """
    from monai.data import list_data_collate

    if batch and all(isinstance(b, Mapping) and image_key in b for b in batch):
        stacked = _stacked_view([b[image_key] for b in batch])
        if stacked is not None:
            out = {image_key: stacked}
            keys = [k for k in batch[0] if k != image_key]
            for k in keys:  # numeric numpy arrays (location, size): one stack, not B tensor conversions
                values = [b.get(k) for b in batch]
                first = values[0]
                if (
                    isinstance(first, np.ndarray)
                    and first.dtype.kind in "biuf"
                    and all(type(v) is np.ndarray and v.shape == first.shape and v.dtype == first.dtype for v in values)
                ):
                    out[k] = torch.from_numpy(np.stack(values))
            rest = [k for k in keys if k not in out]
            if rest:
                collated = list_data_collate([{k: b[k] for k in rest} for b in batch])
                out.update({k: collated[k] for k in rest})
            return {k: out[k] for k in batch[0]}
    return list_data_collate(list(batch))
