"""Reproduce the LSR comparison: low-res model vs intra vs inter vs intra+inter-instance, over seeds.

Trains each variant with the bundle's own configs (``bundles/lsr/configs``) on any datalist of the
mixsup-monai contract (default: the demo cohort), evaluates it on the datalist's ``test`` slides and
prints a markdown table of masked IoU / Dice (mean ± std over seeds), plus an ablation of the
distance readings of the loss. Run by hand (minutes per run on CPU):

    python benchmarks/reproduce_lsr.py --seeds 0 1 2 [--datalist PATH] [--max_epochs 25]
    python benchmarks/reproduce_lsr.py --seeds 0 1 2 --ablation --ablation_seeds 0
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import statistics
import time
from pathlib import Path

from mixsup_monai.utils import run_bundle, run_dirs

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "lsr" / "configs"

#: variant name -> (extra config files, overrides); results are kept in ``--work/<folder>/seed<S>``
VARIANTS = {
    "low-res: network trained on up-sampled block labels": (["lowres.json"], {}),
    "intra-instance": ([], {"formulation": "intra"}),
    "inter-instance": ([], {"formulation": "inter"}),
    "intra+inter-instance": ([], {"formulation": "intra_inter"}),
}
ABLATION = {
    "intra+inter, one-sided −log N(η; μ, σ²+ρ²)": ([], {"formulation": "intra_inter", "distance": "one_sided"}),
    "intra+inter, interval (original LSR code)": ([], {"formulation": "intra_inter", "distance": "interval"}),
    "intra+inter, σ² of Eq. 14 (1/|X|²)": (
        [],
        {"formulation": "intra_inter", "variance": "mean_of_independent", "loss#eps": 1e-8},
    ),
    "intra+inter, α = 0.8": ([], {"formulation": "intra_inter", "alpha": 0.8}),
    "intra+inter, groups of 12 blocks (paper: 10–15)": ([], {"formulation": "intra_inter", "group_size": 12}),
    "intra+inter, no block context (loss on the whole input)": ([], {"formulation": "intra_inter", "block_context": 0}),
    "intra, σ² of Eq. 14 (1/|X|²)": ([], {"formulation": "intra", "variance": "mean_of_independent", "loss#eps": 1e-8}),
}
METRICS = ("val_masked_iou", "val_masked_dice", "val_iou", "val_dice")


def run_workflow(files: list[str], workflow_type: str, overrides: dict) -> None:
    run_bundle(CONFIGS.parent, files, workflow_type, check_properties=False, **overrides)


def read_metrics(folder: Path) -> dict[str, float]:
    with open(folder / "metrics.csv") as f:
        return {row[0]: float(row[1]) for row in csv.reader(f) if len(row) >= 2}


def train_and_test(name: str, files: list[str], overrides: dict, seed: int, args, work: Path) -> dict:
    out = work / re.sub(r"[^\w.+=-]+", "_", name) / f"seed{seed}"
    result_file = out / "result.json"
    if result_file.is_file() and not args.force:
        return json.loads(result_file.read_text())
    common = {
        **run_dirs(CONFIGS.parent, out, args.mlruns, args.datalist),
        "experiment_name": "lsr_reproduce",
        "seed": seed,
        "max_epochs": args.max_epochs,
        "val_interval": args.max_epochs,
        **overrides,
    }
    start = time.time()
    run_workflow(["train.json", *files], "train", common)
    train_seconds = time.time() - start
    run_workflow(["train.json", *files, "evaluate.json"], "eval", common)
    result = {"variant": name, "seed": seed, "train_seconds": train_seconds, **read_metrics(out / "eval")}
    result_file.write_text(json.dumps(result, indent=2))
    return result


def block_labels_upsampled(datalist: Path, block_input_size: int = 64) -> dict:
    """The paper's low-resolution model: test slides' block labels painted as η_z, scored like the networks."""
    import numpy as np
    import torch

    from mixsup_monai.data import load_datalist, slide_items, slides_of
    from mixsup_monai.handlers import SegmentationMetricHandler
    from mixsup_monai.methods.lsr import LabelStatsTable, block_label_map
    from mixsup_monai.transforms import LoadSlided

    data = load_datalist(datalist, task="lsr")
    table = LabelStatsTable.load(data["label_stats"], classes=data["classes"])
    means = {z: np.asarray(row) for z, row in zip(table.z_values, table.mean)}
    slides = [s for s in slides_of(data, "test") if "mask" in s]
    downsample = slides[0]["blocks"][0]["size"][0] / block_input_size
    loader = LoadSlided(keys="image", downsample=downsample, mask_key="mask", mask_output_key="label")
    metrics = {
        "val_masked_iou": SegmentationMetricHandler("masked_iou", band_distance=block_input_size),
        "val_masked_dice": SegmentationMetricHandler("masked_dice", band_distance=block_input_size),
        "val_iou": SegmentationMetricHandler("iou"),
        "val_dice": SegmentationMetricHandler("dice"),
    }
    for metric in metrics.values():
        metric.reset()
    for slide, item in zip(slides, slide_items(data, "test", require="mask")):
        label = loader(item)["label"]
        pred = torch.from_numpy(block_label_map(slide["blocks"], means, downsample, tuple(label.shape[-2:])))
        for metric in metrics.values():
            metric.update([{"pred": pred, "label": label}])
    return {"variant": "block labels up-sampled", "seed": 0, "train_seconds": 0.0} | {
        name: float(metric.compute()) for name, metric in metrics.items()
    }


def table(rows: dict[str, list[dict]]) -> str:
    lines = [
        "| variant | runs | masked IoU | masked Dice | IoU | Dice | train s / run |",
        "|---|---:|---|---|---|---|---:|",
    ]
    for name, results in rows.items():
        cells = []
        for metric in METRICS:
            values = [r[metric] for r in results]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}")
        seconds = statistics.mean(r["train_seconds"] for r in results)
        lines.append(f"| {name} | {len(results)} | {' | '.join(cells)} | {seconds:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", type=Path, default=None, help="datalist (default: the bundle's demo cohort)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max_epochs", type=int, default=25)
    parser.add_argument("--ablation", action="store_true", help="also run the distance / variance / α ablation")
    parser.add_argument("--ablation_seeds", type=int, nargs="+", help="seeds of the ablation rows (default: --seeds)")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/runs/lsr"), help="checkpoints and results")
    parser.add_argument("--mlruns", type=Path, default=Path("mlruns"))
    parser.add_argument("--force", action="store_true", help="re-run variants whose result.json exists")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.WARNING)

    variants = dict(VARIANTS, **(ABLATION if args.ablation else {}))
    datalist = args.datalist or CONFIGS.parent / "demo_data" / "datalist.json"
    if not datalist.is_file():
        from mixsup_monai.demo import make_demo_cohort

        datalist = make_demo_cohort("lsr", datalist.parent, seed=0)
    rows: dict[str, list[dict]] = {"low-res: block labels up-sampled (no training)": [block_labels_upsampled(datalist)]}
    title = f"LSR on {args.datalist or 'the demo cohort'}, test slides, seeds {args.seeds}, {args.max_epochs} epochs"
    # seed-major: an interrupted reproduction still has every variant at the first seeds; the table is
    # rewritten after every run (finished runs are reused from their result.json on the next call)
    for seed in args.seeds:
        for name, (files, overrides) in variants.items():
            if name in ABLATION and args.ablation_seeds is not None and seed not in args.ablation_seeds:
                continue
            rows.setdefault(name, []).append(train_and_test(name, files, overrides, seed, args, args.work))
            print(f"done: {name}, seed {seed}", flush=True)
            text = f"{title}\n\n{table(rows)}\n"
            (args.work / "results.md").write_text(text)
            (args.work / "results.json").write_text(json.dumps(rows, indent=2))
    print("\n" + text)


if __name__ == "__main__":
    main()
