"""Reproduce the LSR comparison: low-res model vs intra vs inter vs intra+inter-instance, over seeds.

Trains each variant with the bundle's own configs (``bundles/lsr/configs``) on any datalist of the
mixsup-monai contract (default: the demo cohort), evaluates it on the datalist's ``test`` slides and
prints a markdown table of masked IoU / Dice (mean ± std over seeds), plus an ablation of the
distance readings of the loss. Run by hand (minutes per run on CPU):

    python benchmarks/reproduce_lsr.py --seeds 0 1 2 [--datalist PATH] [--max_epochs 25] [--ablation]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import time
from pathlib import Path

from mixsup_monai.utils import run_bundle

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "lsr" / "configs"

#: variant name -> (extra config files, overrides)
VARIANTS = {
    "low-res model": (["lowres.json"], {}),
    "intra-instance": ([], {"formulation": "intra"}),
    "inter-instance": ([], {"formulation": "inter"}),
    "intra+inter-instance": ([], {"formulation": "intra_inter"}),
}
ABLATION = {
    "intra+inter, one-sided −log N(η; μ, σ²+ρ²)": ([], {"formulation": "intra_inter", "distance": "one_sided"}),
    "intra+inter, interval (original LSR code)": ([], {"formulation": "intra_inter", "distance": "interval"}),
    "intra+inter, σ² of Eq. 14 (1/|X|²)": ([], {"formulation": "intra_inter", "variance": "mean_of_independent", "loss#eps": 1e-8}),
    "intra+inter, α = 0.8": ([], {"formulation": "intra_inter", "alpha": 0.8}),
    "intra, σ² of Eq. 14 (1/|X|²)": ([], {"formulation": "intra", "variance": "mean_of_independent", "loss#eps": 1e-8}),
}
METRICS = ("val_masked_iou", "val_masked_dice", "val_iou", "val_dice")


def run_workflow(files: list[str], workflow_type: str, overrides: dict) -> None:
    run_bundle(CONFIGS.parent, files, workflow_type, check_properties=False, **overrides)


def read_metrics(folder: Path) -> dict[str, float]:
    with open(folder / "metrics.csv") as f:
        return {row[0]: float(row[1]) for row in csv.reader(f) if len(row) >= 2}


def train_and_test(name: str, files: list[str], overrides: dict, seed: int, args, work: Path) -> dict:
    out = work / name.replace(" ", "_").replace("/", "_") / f"seed{seed}"
    result_file = out / "result.json"
    if result_file.is_file() and not args.force:
        return json.loads(result_file.read_text())
    common = {
        "bundle_root": str(CONFIGS.parent),
        "ckpt_dir": str(out / "models"),
        "output_dir": str(out / "eval"),
        "mlflow_dir": str(args.mlruns),
        "experiment_name": "lsr_reproduce",
        "seed": seed,
        "max_epochs": args.max_epochs,
        "val_interval": args.max_epochs,
        **({"datalist": str(args.datalist)} if args.datalist else {}),
        **overrides,
    }
    start = time.time()
    run_workflow(["train.json", *files], "train", common)
    train_seconds = time.time() - start
    run_workflow(["train.json", *files, "evaluate.json"], "eval", common)
    result = {"variant": name, "seed": seed, "train_seconds": train_seconds, **read_metrics(out / "eval")}
    result_file.write_text(json.dumps(result, indent=2))
    return result


def table(rows: dict[str, list[dict]]) -> str:
    lines = [
        "| variant | masked IoU | masked Dice | IoU | Dice | train s / run |",
        "|---|---|---|---|---|---|",
    ]
    for name, results in rows.items():
        cells = []
        for metric in METRICS:
            values = [r[metric] for r in results]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}")
        seconds = statistics.mean(r["train_seconds"] for r in results)
        lines.append(f"| {name} | {' | '.join(cells)} | {seconds:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", type=Path, default=None, help="datalist (default: the bundle's demo cohort)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max_epochs", type=int, default=25)
    parser.add_argument("--ablation", action="store_true", help="also run the distance / variance / α ablation")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/runs/lsr"), help="checkpoints and results")
    parser.add_argument("--mlruns", type=Path, default=Path("mlruns"))
    parser.add_argument("--force", action="store_true", help="re-run variants whose result.json exists")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.WARNING)

    variants = dict(VARIANTS, **(ABLATION if args.ablation else {}))
    rows: dict[str, list[dict]] = {}
    for name, (files, overrides) in variants.items():
        rows[name] = [train_and_test(name, files, overrides, seed, args, args.work) for seed in args.seeds]
        print(f"done: {name}", flush=True)
    title = f"LSR on {args.datalist or 'the demo cohort'}, test slides, seeds {args.seeds}, {args.max_epochs} epochs"
    text = f"{title}\n\n{table(rows)}\n"
    print("\n" + text)
    (args.work / "results.md").write_text(text)
    (args.work / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
