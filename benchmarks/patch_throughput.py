"""Patch-reading throughput: raw readers (cuCIM batch, MONAI WSIReader, OpenSlide) vs our DataLoader pipeline.

Usage::

    python benchmarks/patch_throughput.py [--size 8192] [--patch 256] [--batch 64] [--workers 2] [--rounds 5]

Writes a pyramidal JPEG TIFF (``--size`` squared, 256 px tiles, real IHC texture from
``skimage.data.immunohistochemistry`` mirrored to fill it) into a temporary folder, then reads every
``--patch`` px patch of a level-0 grid with:

(a) cuCIM ``CuImage.read_region(locations, num_workers=W, batch_size=B)`` -- its raw streaming batch read;
(b) MONAI ``WSIReader(backend="cucim").get_data`` per patch;
(c) OpenSlide ``read_region`` per patch;
(d) ours: ``WSIPatchDataset`` + ``torch.utils.data.DataLoader(batch_sampler=PatchBatchSampler(ds, B),
    collate_fn=collate_patches)`` producing ``(B, 3, h, w)`` uint8 tensors, in the main process with W
    decoding threads;
(e) the same with a plain ``batch_size=B`` (no read-ahead of the next batch);
(f) the same with W fork worker processes (1 decoding thread each);
(g) (d) with float32 [0, 1] output.

The machine is shared, so a single timing swings by tens of percent: in each of ``--rounds`` rounds,
every method is timed (shuffled order) between two runs of (a), and its ratio to the mean of those
two is recorded. The table shows each method's median patches/s and its median ratio to the best raw
reader. The load average is printed: figures taken while other jobs run are noisier.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["make_benchmark_slide", "main"]


def make_benchmark_slide(path: str | Path, size: int = 8192, mpp: float = 0.5) -> Path:
    """Write a ``size`` x ``size`` pyramidal JPEG TIFF of mirrored real IHC texture."""
    from skimage import data

    from mixsup_monai.wsi import write_pyramidal_tiff

    ihc = data.immunohistochemistry()
    tile = np.concatenate([ihc, ihc[:, ::-1]], 1)
    tile = np.concatenate([tile, tile[::-1]], 0)
    reps = -(-size // tile.shape[0])
    image = np.ascontiguousarray(np.tile(tile, (reps, reps, 1))[:size, :size])
    write_pyramidal_tiff(path, image, mpp=mpp, tile_size=256)
    return Path(path)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and print the table; returns ``{method: (median patches/s, median ratio to (a))}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slide", type=str, default=None, help="use this slide instead of generating one")
    args = parser.parse_args(argv)

    import openslide
    import torch
    from cucim import CuImage
    from monai.data import WSIReader
    from torch.utils.data import DataLoader

    from mixsup_monai.data.patch_dataset import PatchBatchSampler, WSIPatchDataset, collate_patches
    from mixsup_monai.wsi import open_slide

    torch.set_num_threads(1)
    tmp = tempfile.TemporaryDirectory(prefix="patch_throughput_")
    if args.slide is None:
        t0 = time.perf_counter()
        slide_path = make_benchmark_slide(Path(tmp.name) / "bench.tif", args.size)
        print(f"wrote a {args.size} x {args.size} JPEG pyramid in {time.perf_counter() - t0:.1f} s")
    else:
        slide_path = Path(args.slide)
    with open_slide(slide_path) as slide:
        width, height = slide.dimensions
        backend = slide.info.backend
    p, b, w = args.patch, args.batch, args.workers
    xs, ys = np.meshgrid(np.arange(0, width - p + 1, p), np.arange(0, height - p + 1, p))
    loc_list = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.int64).tolist()
    n = len(loc_list)
    print(
        f"slide {width} x {height} ({backend}); {n} patches of {p} px per timing; batch {b}; {w} workers/threads; "
        f"{args.rounds} rounds; {os.cpu_count()} CPUs; torch {torch.__version__}"
    )

    cu = CuImage(str(slide_path))

    def cucim_batch() -> int:
        count = 0
        for batch in cu.read_region(loc_list, (p, p), 0, num_workers=w, batch_size=b):
            count += np.asarray(batch).shape[0]
        return count

    reader = WSIReader(backend="cucim")
    wsi = reader.read(str(slide_path))

    def monai_get_data() -> int:
        for x, y in loc_list:
            reader.get_data(wsi, location=(y, x), size=(p, p), level=0)
        return n

    osr = openslide.OpenSlide(str(slide_path))

    def openslide_per_patch() -> int:
        for x, y in loc_list:
            np.asarray(osr.read_region((x, y), 0, (p, p)))
        return n

    items = [{"image": str(slide_path), "location": [x, y], "size": [p, p], "level": 0} for x, y in loc_list]

    def loader_run(loader, dtype):
        def run() -> int:
            count = 0
            for batch in loader:
                image = batch["image"]
                if image.shape[1:] != (3, p, p) or image.dtype != dtype:
                    raise RuntimeError(f"unexpected batch {tuple(image.shape)} {image.dtype}")
                count += image.shape[0]
            return count

        return run

    ours_ds = WSIPatchDataset(items, reader_workers=w)
    in_process = DataLoader(ours_ds, batch_sampler=PatchBatchSampler(ours_ds, b), collate_fn=collate_patches)
    plain = DataLoader(WSIPatchDataset(items, reader_workers=w), batch_size=b, collate_fn=collate_patches)
    forked = DataLoader(
        WSIPatchDataset(items),
        batch_size=b,
        collate_fn=collate_patches,
        num_workers=w,
        multiprocessing_context="fork",
        persistent_workers=True,
        prefetch_factor=4,
    )
    float_ds = WSIPatchDataset(items, reader_workers=w, dtype=torch.float32)
    as_float = DataLoader(float_ds, batch_sampler=PatchBatchSampler(float_ds, b), collate_fn=collate_patches)
    methods = {
        f"(a) cuCIM raw batch read_region ({w} workers)": cucim_batch,
        "(b) MONAI WSIReader.get_data per patch": monai_get_data,
        "(c) OpenSlide read_region per patch": openslide_per_patch,
        f"(d) ours: WSIPatchDataset + DataLoader, uint8 ({w} threads)": loader_run(in_process, torch.uint8),
        "(e) ours, plain batch_size (no PatchBatchSampler)": loader_run(plain, torch.uint8),
        f"(f) ours, {w} fork workers": loader_run(forked, torch.uint8),
        "(g) ours, float32 [0, 1] output": loader_run(as_float, torch.float32),
    }
    for fn in methods.values():  # warm-up: page cache, worker start-up, buffer pool
        fn()
    load_before = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else "?"
    raw_a = next(iter(methods))
    rates: dict[str, list[float]] = {k: [] for k in methods}
    relative: dict[str, list[float]] = {k: [] for k in methods}  # vs the mean of the (a) runs just before/after
    rng = random.Random(0)

    def timed(name: str) -> float:
        start = time.perf_counter()
        count = methods[name]()
        return count / (time.perf_counter() - start)

    for _ in range(args.rounds):
        order = list(methods)[1:]
        rng.shuffle(order)
        for name in order:
            before, rate, after = timed(raw_a), timed(name), timed(raw_a)
            rates[raw_a] += [before, after]
            relative[raw_a] += [1.0, 1.0]
            rates[name].append(rate)
            relative[name].append(2 * rate / (before + after))
    osr.close()
    raw_names = [k for k in methods if k.startswith(("(a)", "(b)", "(c)"))]
    best = max(raw_names, key=lambda k: np.median(relative[k]))
    results = {}
    print(f"\n{'method':<58} {'patches/s':>10} {'x best raw':>11}")
    for name in methods:
        ratio = float(np.median(relative[name]) / np.median(relative[best]))
        results[name] = (float(np.median(rates[name])), ratio)
        print(f"{name:<58} {results[name][0]:>10.0f} {ratio:>11.2f}")
    load_after = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else "?"
    print(f"load average (1, 5, 15 min) before: {' '.join(load_before)}, after: {' '.join(load_after)}")
    ours = next(k for k in methods if k.startswith("(d)"))
    verdict = "PASS" if results[ours][1] >= 0.9 else "FAIL"
    print(f"\nours (d) / best raw {best.split(')')[0]}): {results[ours][1]:.2f} (bar >= 0.90): {verdict}")
    del in_process, plain, forked, as_float
    tmp.cleanup()
    return results


if __name__ == "__main__":
    main()
