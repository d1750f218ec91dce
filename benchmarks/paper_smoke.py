"""One short CPU smoke pass of every bundle's ``paper.json`` with the paper's shapes (run by hand, not a test).

Usage::

    python benchmarks/paper_smoke.py [--out DIR] [--bundles mixsup lsr npl] [--threads 2] [--batches 1]
                                     [--big-size 4096] [--big-bundles mixsup npl] [--workers N] [--predictor-batch 8]
                                     [--timeout 1200] [--max-rss-mb 19000] [--keep]

For each bundle, one at a time, each step in a fresh subprocess:

1. ``demo``: ``python -m mixsup_monai demo-data --task T --out DIR --slides N`` with the fewest slides the task
   allows (mixsup 7, lsr 3, npl 4). The demo slides have no size option: they are 1536-2816 px at level 0
   (1 um/px), i.e. 3-6 x 4-7 windows of 512 px at stride 384 (MixSup), 8 x 10 blocks of 256 px (LSR), 7-10 x
   9-10 patches of 224 px (NPL) before tissue filtering -- several patches per slide at the paper's level 0,
   which is all a smoke pass needs. (The demo's 512 px pixel-labelled regions hold one 512 px patch each.)
2. ``train``: ``python -m monai.bundle run --config_file "['train.json','paper.json']"`` with the paper's shapes
   kept (patch / block sizes, overlap, networks, batch size and 2:1:7 mixing, top-K, DataLoader workers unless
   ``--workers``) and the budget cut: 1 round after round 0 (so that the mixed pools of a round are trained
   on), 1 epoch per stage, ``--batches`` batches per epoch, ``cpu_threads`` = ``--threads``, progress bars off.
   The slide predictors' inference batch (MixSup's E-step / top-K scoring, NPL's E-step) is ``--predictor-batch``
   (8) instead of paper.json's 32 / 128: it changes no result, and at 512 px MixSup's 32 (~9 GB of activations
   on top of the UNet's training memory) does not fit a 23 GB CPU machine. ``--predictor-batch 0`` keeps it.
3. ``evaluate``: ``train.json + paper.json + evaluate.json`` on the test section, same budget.
4. ``infer_big``: the bundle's slide pipeline (``inference.json`` + ``slide_inference.json``) with the paper's
   shapes mapped onto its keys, on one large sparse synthetic slide of ``--big-size`` px
   (:func:`mixsup_monai.demo.synthetic_slide.write_synthetic_slide`, ~30 % tissue, 1 um/px like the demo; skipped
   when that helper is absent or ``--big-size 0``), for ``--big-bundles`` (default mixsup, npl: their predictors
   skip glass; LSR's streams 360 px windows over the tissue -- add ``lsr`` to run it).

Per step it records ok, wall seconds and peak RSS (``ru_maxrss`` of the step's process tree from ``os.wait4``,
imports included) and, on failure, the last error line of its log (``DIR/<bundle>/<step>.log``). A bundle is ok
when all its steps are. The last printed line is one JSON object
``{bundle: {"ok", "seconds", "rss_mb", "error", "steps": {step: {...}}}}`` (seconds summed over steps, rss_mb the
largest step's).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"

#: fewest demo slides each task allows (``mixsup_monai.demo.DEFAULT_GROUPS`` minimums).
DEMO_SLIDES = {"mixsup": 7, "lsr": 3, "npl": 4}
#: level-0 edge of the demo's LSR blocks (``mixsup_monai.demo.cohorts.LSR_BLOCK_SIZE``).
LSR_BLOCK = 256
#: level-0 microns per pixel of the demo slides (``mixsup_monai.demo.MPP``); the big slide uses the same.
DEMO_MPP = 1.0
#: paper.json keys of DataLoader / predictor worker counts (replaced by ``--workers`` when given).
WORKER_KEYS = ("train#dataloader#num_workers", "rounds#predictor#num_workers", "train#dataset#num_workers")


def budget(bundle: str, batches: int, threads: int) -> dict[str, Any]:
    """The overrides that cut a paper run to a smoke pass (shapes untouched)."""
    rounds = {  # the rounds bundles: round 0 + one round, one epoch each
        "cpu_threads": threads,
        "resume": False,
        "max_rounds": 1,
        "initial_epochs": 1,
        "epochs_per_round": 1,
        "batches_per_epoch": batches,
        "rounds#predictor#progress": False,
    }
    if bundle == "mixsup":
        return {**rounds, "stage2_epochs": 1}
    if bundle == "npl":
        return rounds
    if bundle == "lsr":  # no rounds, no batches_per_epoch: cap the epoch through the trainer
        return {"cpu_threads": threads, "max_epochs": 1, "val_interval": 1, "train#trainer#epoch_length": batches}
    raise ValueError(f"unknown bundle {bundle!r}")


def slide_inference_keys(bundle: str) -> set[str]:
    """Top-level keys of the slide pipeline, ``inference.json`` + ``slide_inference.json``."""
    configs = BUNDLES / bundle / "configs"
    return {k for name in SLIDE_CONFIGS for k in json.loads((configs / name).read_text())}


#: the slide pipeline's config files, in order
SLIDE_CONFIGS = ("inference.json", "slide_inference.json")


def inference_overrides(bundle: str, paper: dict[str, Any]) -> dict[str, Any]:
    """paper.json's shapes on the keys of the slide pipeline (``inference.json`` + ``slide_inference.json``)."""
    inference = slide_inference_keys(bundle)
    renames = {
        "rounds#predictor#": "predictor#",
        "rounds#stage2#network_def": "stage2_network_def",
        "validate#inferer#": "inferer#",
    }
    out: dict[str, Any] = {}
    for key, value in paper.items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        top = key.split("#")[0]
        if top in inference and key not in WORKER_KEYS:
            out[key] = value
    if bundle == "lsr":  # read the slide at the scale the network was trained at (a 256 px block -> input size)
        out["slide_downsample"] = LSR_BLOCK / paper.get("block_input_size", inference["block_input_size"])
    if bundle in ("mixsup", "npl"):
        out["predictor#progress"] = False
    return out


def command(configs: list[Path], overrides: dict[str, Any]) -> list[str]:
    """``python -m monai.bundle run --config_file ... --key value ...`` (values as Python literals for fire)."""
    files = [str(c) for c in configs]
    args = [sys.executable, "-W", "ignore:parsing config_file", "-m", "monai.bundle", "run", "--config_file"]
    args.append(files[0] if len(files) == 1 else str(files))
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else repr(value)]
    return args


def last_error(log: Path) -> str:
    """The last ``error:`` / exception line of a log, else its last non-empty line."""
    noise = re.compile(r"dlopen error|missing cuda symbols|cuFile initialization|Warning|check_worker_number")
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip() and not noise.search(ln)]
    pattern = re.compile(r"^error:|^\w*(Error|Exception|Killed)\b|\w+Error: ")
    for line in reversed(lines):
        if pattern.search(line):
            return line[:500]
    return lines[-1][:500] if lines else "(empty log)"


def tree_pss_mb(pid: int) -> float:
    """Current memory of a process and its descendants (``/proc``, PSS: pages shared by fork workers counted
    once), in MiB; 0 when it is gone."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            total += int(re.search(r"^Pss:\s+(\d+)", rollup, re.M).group(1)) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, AttributeError, ValueError):
            continue
    return total


def run_step(
    args: list[str], log: Path, timeout: float, env: dict[str, str], max_rss_mb: float = 0.0
) -> dict[str, Any]:
    """Run one step; ``{"ok", "seconds", "rss_mb", "error"}`` with the peak RSS of its process tree.

    The step is killed when it runs past ``timeout`` seconds or its process tree above ``max_rss_mb`` (0: no
    limit) -- on a shared machine the kernel's OOM killer would otherwise pick a process, maybe someone else's.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    timed_out = over = False
    with log.open("w") as f:
        f.write(" ".join(args) + "\n\n")
        f.flush()
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout:
                timed_out = True
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            if max_rss_mb and tree_pss_mb(proc.pid) > max_rss_mb:
                over = True
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.25)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = round(time.perf_counter() - start, 1)
    ok = proc.returncode == 0 and not timed_out and not over
    error = None
    if timed_out:
        error = f"timed out after {timeout:.0f} s"
    elif over:
        error = f"killed above --max-rss-mb {max_rss_mb:.0f} MiB, during: {last_error(log)}"
    elif proc.returncode == -9:
        error = f"killed by SIGKILL (out of memory?), during: {last_error(log)}"
    elif not ok:
        error = f"exit {proc.returncode}: {last_error(log)}"
    return {"ok": ok, "seconds": seconds, "rss_mb": round(usage.ru_maxrss / 1024, 1), "error": error}


def big_slide(path: Path, size: int, log: Path, timeout: float, env: dict[str, str]) -> dict[str, Any]:
    """Write the large synthetic slide in a subprocess (read-only use of ``mixsup_monai.demo.synthetic_slide``)."""
    code = (
        "import json, sys\n"
        "from mixsup_monai.demo.synthetic_slide import write_synthetic_slide\n"
        f"info = write_synthetic_slide({str(path)!r}, size=({size}, {size}), tissue_fraction=0.3, mpp={DEMO_MPP})\n"
        "print(json.dumps({k: v for k, v in info.items() if k != 'levels'}))\n"
    )
    return run_step([sys.executable, "-c", code], log, timeout, env)


def smoke_bundle(bundle: str, work: Path, opts: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """demo -> train -> evaluate -> infer_big of one bundle; stops at the first failing step."""
    configs = BUNDLES / bundle / "configs"
    paper = json.loads((configs / "paper.json").read_text())
    steps: dict[str, dict[str, Any]] = {}
    demo_dir = work / "demo"
    steps["demo"] = run_step(
        [sys.executable, "-m", "mixsup_monai", "demo-data", "--task", bundle, "--out", str(demo_dir)]
        + ["--slides", str(opts.slides or DEMO_SLIDES[bundle])],
        work / "demo.log",
        opts.timeout,
        env,
    )
    dirs = {
        "bundle_root": str(BUNDLES / bundle),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "mlflow_dir": str(work / "mlruns"),
        "datalist": str(demo_dir / "datalist.json"),
    }
    cut = budget(bundle, opts.batches, opts.threads)
    if opts.workers is not None:
        cut.update({k: opts.workers for k in WORKER_KEYS if k in paper})
    if opts.predictor_batch and bundle in ("mixsup", "npl"):
        cut["rounds#predictor#batch_size"] = opts.predictor_batch
    extra = dict(item.split("=", 1) for item in opts.set if item.split("=", 1)[0].startswith(f"{bundle}:"))
    cut.update({key.split(":", 1)[1]: value for key, value in extra.items()})
    plan = [
        ("train", [configs / "train.json", configs / "paper.json"], {**dirs, **cut}),
        ("evaluate", [configs / "train.json", configs / "paper.json", configs / "evaluate.json"], {**dirs, **cut}),
    ]
    for name, files, overrides in plan:
        if not all(s["ok"] for s in steps.values()):
            break
        print(f"[{bundle}] {name} ...", flush=True)
        steps[name] = run_step(command(files, overrides), work / f"{name}.log", opts.timeout, env, opts.max_rss_mb)
        print(f"[{bundle}] {name}: {steps[name]}", flush=True)
    if opts.big_size and bundle in opts.big_bundles and all(s["ok"] for s in steps.values()):
        slide = work / "big" / f"big_{opts.big_size}.tif"
        slide.parent.mkdir(parents=True, exist_ok=True)
        made = big_slide(slide, opts.big_size, work / "big_slide.log", opts.timeout, env)
        if made["ok"]:
            overrides = {
                "bundle_root": str(BUNDLES / bundle),
                "ckpt_path": str(work / "models" / "model.pt"),
                "output_dir": str(work / "inference"),
                "input_slides": repr([str(slide)]),
                "cpu_threads": opts.threads,
                **inference_overrides(bundle, paper),
            }
            if opts.predictor_batch and bundle in ("mixsup", "npl"):
                overrides["predictor#batch_size"] = opts.predictor_batch
            inference = slide_inference_keys(bundle)
            overrides.update({k.split(":", 1)[1]: v for k, v in extra.items() if k.split(":", 1)[1] in inference})
            print(f"[{bundle}] infer_big ({opts.big_size} px) ...", flush=True)
            steps["infer_big"] = run_step(
                command([configs / name for name in SLIDE_CONFIGS], overrides),
                work / "infer_big.log",
                opts.timeout,
                env,
                opts.max_rss_mb,
            )
            steps["infer_big"]["slide_seconds"] = made["seconds"]
            print(f"[{bundle}] infer_big: {steps['infer_big']}", flush=True)
        else:  # the helper is another engineer's work in progress: a missing one is not this bundle's failure
            print(f"[{bundle}] big synthetic slide skipped: {made['error']}", flush=True)
            steps["infer_big"] = {"ok": None, "seconds": 0.0, "rss_mb": 0.0, "error": f"skipped: {made['error']}"}
    failed = [(n, s) for n, s in steps.items() if s["ok"] is False]
    return {
        "ok": not failed,
        "seconds": round(sum(s["seconds"] for s in steps.values()), 1),
        "rss_mb": max(s["rss_mb"] for s in steps.values()),
        "error": f"{failed[0][0]}: {failed[0][1]['error']}" if failed else None,
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="work folder (default: a temporary folder, removed unless --keep)")
    parser.add_argument("--bundles", nargs="+", default=["mixsup", "lsr", "npl"], choices=["mixsup", "lsr", "npl"])
    parser.add_argument("--slides", type=int, default=None, help="demo slides per bundle (default: the minimum)")
    parser.add_argument("--threads", type=int, default=2, help="cpu_threads of every run")
    parser.add_argument("--batches", type=int, default=1, help="batches per epoch (LSR: the epoch's length)")
    parser.add_argument("--workers", type=int, default=None, help="replace paper.json's worker counts")
    parser.add_argument("--big-size", type=int, default=4096, help="edge of the synthetic slide (0: skip)")
    parser.add_argument(
        "--big-bundles",
        nargs="*",
        default=["mixsup", "npl"],
        choices=["mixsup", "lsr", "npl"],
        help="bundles whose inference.json runs on the synthetic slide (LSR's slides densely over glass: slow)",
    )
    parser.add_argument(
        "--predictor-batch",
        type=int,
        default=8,
        help="inference batch of the slide predictors (paper.json: mixsup 32, npl 128; 0 keeps paper.json's)",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="BUNDLE:KEY=VALUE",
        help="more overrides (a Python literal), e.g. mixsup:stage2_batch_size=2 mixsup:top_k=4",
    )
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per step")
    parser.add_argument(
        "--max-rss-mb", type=float, default=19000.0, help="kill a step whose process tree exceeds this (0: no limit)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    opts = parser.parse_args(argv)

    out = Path(opts.out) if opts.out else Path(tempfile.mkdtemp(prefix="paper_smoke_"))
    env = {**os.environ, "OMP_NUM_THREADS": str(opts.threads), "MKL_NUM_THREADS": str(opts.threads)}
    results: dict[str, Any] = {}
    try:
        for bundle in opts.bundles:
            work = out / bundle
            if work.exists():
                shutil.rmtree(work)
            print(f"[{bundle}] work folder {work}", flush=True)
            results[bundle] = smoke_bundle(bundle, work, opts, env)
    finally:
        if not opts.keep and opts.out is None:
            shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
