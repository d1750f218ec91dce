"""E-step memory at gigapixel scale: peak RSS flat in slide size and cohort size, speed vs raw reading.

Usage::

    python benchmarks/scale.py [--out DIR] [--big 100000] [--small 20000] [--threads 2]

Builds sparse synthetic pyramidal slides (:func:`mixsup_monai.demo.synthetic_slide.write_synthetic_slide`,
~30 % tissue, 0.25 um/px = 40x) of ``--big`` and ``--small`` px, then runs MixSup's E-step as the bundle does
-- :class:`~mixsup_monai.rounds.SlidePatchPredictor` (outputs written per slide to disk) ->
:class:`~mixsup_monai.methods.mixsup.MixSupRule` (each slide's labels written as a shard) ->
:class:`~mixsup_monai.rounds.PseudoLabelStore` -- with the paper's patch geometry (512 px, 128 overlap, at
level 1 = 20x) and a network that keeps every patch (logit 1 everywhere, one multiply). Each case
runs in a fresh subprocess for its peak RSS (``ru_maxrss``, imports included):

* ``small`` x 1 and ``small`` x 4 (the same file under 4 names): flat in the cohort;
* ``small`` x 1 and ``big`` x 1: flat in the slide size;
* in the big case, the same patches read raw (the predictor's batched reader, no network, no rule, no store),
  in the same process: the E-step's patches/s as a ratio to raw reading;
* the 4 slides again under ``torchrun --nproc_per_node 2`` (gloo, 1 thread per rank): the slides split across
  the ranks, rank 0 making the labels (``ranks2_speedup``: the one-process E-step time over this one).

The last line printed is one JSON object (``rss_mb_1_slide``, ``rss_mb_4_slides``, ``rss_mb_20k``,
``rss_mb_100k``, ``store_bytes_per_patch``, ``estep_ratio_to_raw``, ``ranks2_speedup``, plus the
streaming-inference keys of ``benchmarks/scale_inference.py`` when that benchmark's JSON is given with
``--inference-json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PATCH, OVERLAP, LEVEL, MPP = 512, 128, 1, 0.25


def _network():
    import torch

    class KeepEveryPatch(torch.nn.Module):
        """Logit 1 everywhere (sigmoid 0.73 >= T: every patch kept) at the cost of one multiply: the benchmark
        measures the E-step's reading, rule and store, not a network."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1] * 0 + 1.0

    return KeepEveryPatch()


def _estep(slides: list[str], work: Path, threads: int, raw: bool) -> dict:
    """One E-step over ``slides`` (each a positive slide); returns sizes and times, RSS measured by the caller."""
    import torch
    from torch.utils.data import DataLoader

    from mixsup_monai.data.patch_dataset import WSIPatchDataset
    from mixsup_monai.methods.mixsup import MixSupRule
    from mixsup_monai.rounds import PseudoLabelStore, SlidePatchPredictor

    torch.set_num_threads(threads)
    entries = [{"image": s, "label": 1} for s in slides]
    predictor = SlidePatchPredictor(
        _network(),
        patch_size=PATCH,
        level=LEVEL,
        overlap=OVERLAP,
        batch_size=32,
        output_dtype=torch.float16,
        output_dir=work / "e_step",
        progress=False,
    )
    t0 = time.perf_counter()
    patches = predictor.count(entries)
    grid_s = time.perf_counter() - t0
    store = PseudoLabelStore(work / "store")
    t0 = time.perf_counter()
    with store.open_round(1) as sink:
        labels = MixSupRule()(predictor.predict(entries), round_index=1, labels=sink)
        store.save(labels)
    estep_s = time.perf_counter() - t0
    store_bytes = sum(f.stat().st_size for f in store.path(1).iterdir())
    out = {"patches": patches, "kept": labels.sizes()["positive"], "grid_s": grid_s, "estep_s": estep_s}
    out["store_bytes_per_patch"] = store_bytes / max(1, out["kept"])
    if raw:
        items = [dict(it) for e in entries for it in predictor.items(e)]
        dataset = WSIPatchDataset(items, dtype=torch.float32)
        t0 = time.perf_counter()
        for _ in DataLoader(dataset, batch_size=32, shuffle=False, num_workers=0):
            pass
        out["raw_s"] = time.perf_counter() - t0
        dataset.close()
        out["estep_ratio_to_raw"] = out["raw_s"] / estep_s
    return out


def _estep_two_ranks(slides: list[str], work: Path, threads: int) -> dict | None:
    """The same E-step under ``torchrun`` (gloo): the predictor's slides split across the ranks
    (:meth:`~mixsup_monai.rounds.SlidePatchPredictor.predict_across_ranks`), rank 0 runs the rule and the store as
    the round runner does. Returns rank 0's times (``None`` on the other ranks)."""
    import torch
    import torch.distributed as dist

    from mixsup_monai.methods.mixsup import MixSupRule
    from mixsup_monai.rounds import PseudoLabelStore, SlidePatchPredictor

    dist.init_process_group("gloo")
    torch.set_num_threads(threads)
    entries = [{"image": s, "label": 1} for s in slides]
    predictor = SlidePatchPredictor(
        _network(), patch_size=PATCH, level=LEVEL, overlap=OVERLAP, batch_size=32,
        output_dtype=torch.float16, output_dir=work / f"e_step_{dist.get_rank()}", progress=False,
    )  # fmt: skip
    predictor.count(entries)  # the grids, outside the timed part as in the one-process case
    dist.barrier()
    t0 = time.perf_counter()
    predictions = predictor.predict_across_ranks(entries, work / "shared")
    out = None
    if dist.get_rank() == 0:
        store = PseudoLabelStore(work / "store")
        with store.open_round(1) as sink:
            store.save(MixSupRule()(predictions, round_index=1, labels=sink))
        out = {"estep_s": time.perf_counter() - t0, "world": dist.get_world_size()}
    else:
        next(iter(predictions), None)  # past the ranks' barrier: this rank's slides are on disk
    dist.barrier()
    dist.destroy_process_group()
    return out


class _AnonymousPeak(threading.Thread):
    """Peak ``RssAnon`` (process memory that is not a file's page cache), sampled every 20 ms.

    ``ru_maxrss`` also counts the pages of memory-mapped files the E-step reads (its outputs and shards on disk):
    resident while read, but clean page cache the kernel drops under pressure. Both are reported.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_kb, self.stop = 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            self.stop.wait(0.02)


def _child(args: argparse.Namespace) -> None:
    if args.ranks_work is not None:  # one rank of the torchrun case
        result = _estep_two_ranks(args.slides, args.ranks_work, args.threads)
        if result is not None:
            print(json.dumps(result))
        return
    work = Path(tempfile.mkdtemp(prefix="estep.", dir=args.out))
    sampler = _AnonymousPeak()
    sampler.start()
    try:
        result = _estep(args.slides, work, args.threads, args.raw)
    finally:
        sampler.stop.set()
        shutil.rmtree(work, ignore_errors=True)
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["anon_rss_mb"] = sampler.peak_kb / 1024
    print(json.dumps(result))


def _run_case(slides: list[Path], out: Path, threads: int, raw: bool = False) -> dict:
    command = [sys.executable, __file__, "--child", "--out", str(out), "--threads", str(threads)]
    command += ["--raw"] * raw + ["--slides", *map(str, slides)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"case {slides} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_two_ranks(slides: list[Path], out: Path) -> dict:
    """The E-step of ``slides`` with 2 gloo ranks of 1 thread each (``torchrun --nproc_per_node 2``)."""
    work = Path(tempfile.mkdtemp(prefix="estep_ranks.", dir=out))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    command += [__file__, "--child", "--out", str(out), "--threads", "1", "--ranks-work", str(work)]
    command += ["--slides", *map(str, slides)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if done.returncode:
        raise RuntimeError(f"2-rank case failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _slide(out: Path, size: int) -> Path:
    from mixsup_monai.demo.synthetic_slide import write_synthetic_slide

    path = out / f"synthetic_{size}.tif"
    if not path.exists():
        info = write_synthetic_slide(path, size=(size, size), tissue_fraction=0.3, mpp=MPP, seed=0)
        print(
            f"wrote {path}: {info['tissue_fraction']:.2f} tissue, {info['bytes'] / 2**20:.0f} MB in "
            f"{info['seconds']:.1f} s",
            flush=True,
        )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "mixsup_scale")
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inference-json", type=Path, default=None, help="JSON of benchmarks/scale_inference.py")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--slides", nargs="*", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--ranks-work", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--skip-ranks", action="store_true", help="do not run the 2-rank case")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.child:
        return _child(args)
    small, big = _slide(args.out, args.small), _slide(args.out, args.big)
    copies = []
    for i in range(4):  # four slides of the cohort: one file under four names (slide identity is the name)
        link = args.out / f"cohort_{i}.tif"
        if not link.exists():
            os.symlink(small, link)
        copies.append(link)
    cases = {
        "1_slide": _run_case(copies[:1], args.out, args.threads),
        "4_slides": _run_case(copies, args.out, args.threads),
        "big": _run_case([big], args.out, args.threads, raw=True),
    }
    ranks = None if args.skip_ranks else _run_two_ranks(copies, args.out)
    if ranks is not None:
        print(
            f"2 ranks: E-step of the 4 slides {ranks['estep_s']:.1f} s (1 process, {args.threads} threads: "
            f"{cases['4_slides']['estep_s']:.1f} s)",
            flush=True,
        )
    for name, case in cases.items():
        print(
            f"{name:>8}: {case['patches']:>6} patches, peak RSS {case['rss_mb']:7.0f} MB (anonymous "
            f"{case['anon_rss_mb']:6.0f} MB), E-step "
            f"{case['estep_s']:6.1f} s, store {case['store_bytes_per_patch'] / 1024:.0f} KiB/patch",
            flush=True,
        )
    result = {
        "rss_mb_1_slide": round(cases["1_slide"]["rss_mb"], 1),
        "rss_mb_4_slides": round(cases["4_slides"]["rss_mb"], 1),
        "rss_mb_20k": round(cases["1_slide"]["rss_mb"], 1),
        "rss_mb_100k": round(cases["big"]["rss_mb"], 1),
        "anon_rss_mb_1_slide": round(cases["1_slide"]["anon_rss_mb"], 1),
        "anon_rss_mb_4_slides": round(cases["4_slides"]["anon_rss_mb"], 1),
        "anon_rss_mb_100k": round(cases["big"]["anon_rss_mb"], 1),
        "patches_20k": cases["1_slide"]["patches"],
        "patches_100k": cases["big"]["patches"],
        "store_bytes_per_patch": round(cases["big"]["store_bytes_per_patch"]),
        "estep_ratio_to_raw": round(cases["big"]["estep_ratio_to_raw"], 3),
        # 4 slides: 1 process with --threads threads vs 2 gloo ranks of 1 thread (the same cores)
        "ranks2_speedup": None if ranks is None else round(cases["4_slides"]["estep_s"] / ranks["estep_s"], 3),
        "threads": args.threads,
    }
    if args.inference_json is not None:
        result.update(json.loads(args.inference_json.read_text().strip().splitlines()[-1]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
