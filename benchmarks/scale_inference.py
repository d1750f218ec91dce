"""Memory and time of streamed slide maps on gigapixel slides (run by hand, not a test).

Usage::

    python benchmarks/scale_inference.py [--sizes 20000 100000] [--threads 2] [--out DIR]

For each size, writes a synthetic slide (``mixsup_monai.demo.synthetic_slide``: ~30 % tissue in blobs, JPEG,
0.25 um/px -- a 40x scan), then in a fresh subprocess runs :class:`~mixsup_monai.inferers.StreamingSlideInferer`
with a trivial network (a 1x1 convolution, 2 classes) on 512 px windows with 128 px overlap at downsample 2,
i.e. 0.5 um/px, the 20x-equivalent scale most patch networks are trained at, read from level 1 of the
pyramid. Glass windows are skipped with ``detect_tissue``. The map goes to a one-channel pyramidal TIFF
(probability of class 1, 0..255) and a 1024 px PNG thumbnail; the subprocess reports its peak RSS
(``ru_maxrss``, including ~0.5 GB of torch / MONAI imports) and wall time, and the map is opened with OpenSlide.

The last printed line is one JSON object: ``inference_rss_mb_20k``, ``inference_rss_mb_100k``,
``inference_s_100k``, ``synthetic_write_s_100k`` (and the same keys for any other size given).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[3]))
from mixsup_monai.inferers import PyramidalTiffSink, StreamingSlideInferer, ThumbnailSink
from mixsup_monai.wsi import detect_tissue, open_slide
rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
slide_path, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
network = torch.nn.Conv2d(3, 2, 1).eval()
t1 = time.perf_counter()
slide = open_slide(slide_path)
tissue = detect_tissue(slide)
inferer = StreamingSlideInferer(512, 128, downsample=2, sw_batch_size=16, progress=True)
result = inferer(slide, network, [PyramidalTiffSink(out + ".tif"), ThumbnailSink(out + ".png", max_size=1024)],
                 tissue=tissue)
t2 = time.perf_counter()
print(json.dumps({
    "import_s": t1 - t0, "inference_s": t2 - t1, "rss_imports_mb": rss_imports,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "map_size": result.map_size, "level": result.level, "windows": result.windows, "skipped": result.skipped,
    "tissue_fraction": tissue.fraction,
}))
"""


def _label(size: int) -> str:
    return f"{size // 1000}k" if size % 1000 == 0 else str(size)


def measure(size: int, out: Path, threads: int) -> dict:
    """Write the synthetic slide of ``size``^2 px, run the streamed inference in a subprocess, check the map."""
    import openslide

    from mixsup_monai.demo.synthetic_slide import write_synthetic_slide

    slide = out / f"synthetic-{size}.tif"
    written = write_synthetic_slide(slide, size=(size, size), tissue_fraction=0.3, mpp=0.25, progress=True)
    print(
        f"{size}^2: synthetic slide {written['bytes'] / 2**20:.0f} MB, {len(written['levels'])} levels, "
        f"{written['tissue_fraction']:.1%} tissue, written in {written['seconds']:.1f} s",
        flush=True,
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(slide), str(out / f"map-{size}"), str(threads)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"inference on {size}^2 failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    with openslide.OpenSlide(str(out / f"map-{size}.tif")) as written_map:
        result["map_levels"] = written_map.level_count
        result["map_openslide_size"] = written_map.level_dimensions[0]
        result["map_mpp"] = float(written_map.properties["openslide.mpp-x"])
    if tuple(result["map_openslide_size"]) != tuple(result["map_size"]):
        raise RuntimeError(f"OpenSlide sees {result['map_openslide_size']}, expected {result['map_size']}")
    result.update(
        size=size,
        subprocess_s=wall,
        synthetic_write_s=written["seconds"],
        synthetic_mb=written["bytes"] / 2**20,
        map_mb=(out / f"map-{size}.tif").stat().st_size / 2**20,
    )
    print(json.dumps(result), flush=True)
    slide.unlink()
    return result


def main(argv: list[str] | None = None) -> dict:
    """Measure every size, print a table and the JSON summary line; returns the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000], help="level-0 sides (px)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the inference")
    parser.add_argument("--out", type=str, default=None, help="folder for slides and maps (default: temporary)")
    args = parser.parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="scale_inference_") if args.out is None else None
    out = Path(tmp.name if tmp is not None else args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [measure(size, out, args.threads) for size in args.sizes]
    print(f"\n{'slide':>15} {'write s':>8} {'map':>13} {'windows':>8} {'skipped':>8} {'infer s':>8} {'peak RSS':>9}")
    for r in rows:
        print(
            f"{r['size']:>7} x {r['size']:<7}{r['synthetic_write_s']:>8.1f} "
            f"{r['map_size'][0]:>6} x {r['map_size'][1]:<6}"
            f"{r['windows']:>8} {r['skipped']:>8} {r['inference_s']:>8.1f} {r['peak_rss_mb']:>6.0f} MB"
        )
    summary = {}
    for r in rows:
        label = _label(r["size"])
        summary[f"inference_rss_mb_{label}"] = round(r["peak_rss_mb"], 1)
        summary[f"inference_s_{label}"] = round(r["inference_s"], 1)
        summary[f"synthetic_write_s_{label}"] = round(r["synthetic_write_s"], 1)
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
