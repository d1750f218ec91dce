"""Reproduce the LSR comparison: low-res model vs intra vs inter vs intra+inter-instance, over seeds.

Trains each variant with the bundle's own configs (``bundles/lsr/configs``) on any datalist of the
mixsup-monai contract (default: the demo cohort), evaluates it on the datalist's ``test`` slides and
prints a markdown table of masked IoU / Dice (mean ± std over seeds), plus an ablation of the
distance readings of the loss. Run by hand (minutes per run on CPU):

    python benchmarks/reproduce_lsr.py --seeds 0 1 2 [--datalist PATH] [--max_epochs 25] [--override key=value]
    python benchmarks/reproduce_lsr.py --seeds 0 1 2 --ablation --ablation_seeds 0

Finished runs are kept in ``--work/results.json`` (with their configuration: datalist, epochs, overrides)
and skipped by the next call with the same configuration; ``--force`` runs them again.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

from mixsup_monai.utils import reproduce as runner

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "lsr"

#: variant name -> (extra config files, overrides); runs are kept in ``--work/runs_<config>/<variant>/seed_<S>``
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
RUNS = {**VARIANTS, **ABLATION}
#: the untrained baseline (its record's ``variant``) and its row in the tables
BASELINE = "block labels up-sampled"
BASELINE_ROW = "low-res: block labels up-sampled (no training)"
METRICS = ("val_masked_iou", "val_masked_dice", "val_iou", "val_dice")
#: the configuration of the records written before the script recorded it (the committed table's: demo, 25 epochs)
LEGACY_KEY = runner.config_key(None, {"max_epochs": 25})


class LSRReproduction(runner.Reproduction):
    """The bundle's runs; a variant is config files and overrides, its overrides applied last."""

    def settings(self, method: str, seed: int) -> dict:
        return {**super().settings(method, seed), **RUNS[method][1]}


def run_one(reproduction: runner.Reproduction, variant: str, seed: int) -> dict:
    """Train ``variant`` with ``seed`` and test it (the baseline: score the block labels); returns the metrics."""
    if variant == BASELINE:
        return block_labels_upsampled(Path(reproduction.default_datalist()))
    start = time.time()
    reproduction.train(variant, seed)
    train_seconds = time.time() - start
    return {"train_seconds": train_seconds, **reproduction.evaluate(variant, seed)}


def block_labels_upsampled(datalist: Path, block_input_size: int = 64) -> dict:
    """The paper's low-resolution model: test slides' block labels painted as η_z, scored like the networks."""
    import numpy as np
    import torch

    from mixsup_monai.data import load_datalist, slide_items, slides_of
    from mixsup_monai.methods.lsr import LabelStatsTable, block_label_map
    from mixsup_monai.metrics import SegmentationIoUDice
    from mixsup_monai.transforms import LoadSlided

    data = load_datalist(datalist, task="lsr")
    table = LabelStatsTable.load(data["label_stats"], classes=data["classes"])
    means = {z: np.asarray(row) for z, row in zip(table.z_values, table.mean)}
    slides = [s for s in slides_of(data, "test") if "mask" in s]
    downsample = slides[0]["blocks"][0]["size"][0] / block_input_size
    loader = LoadSlided(keys="image", downsample=downsample, mask_key="mask", mask_output_key="label")
    num_classes = len(data["classes"])
    metrics = {  # name prefix -> metric: each one reports IoU and Dice of its summed counts
        "val_masked_": SegmentationIoUDice(num_classes, band_distance=block_input_size),
        "val_": SegmentationIoUDice(num_classes),
    }
    for slide, item in zip(slides, slide_items(data, "test", require="mask")):
        label = loader(item)["label"]
        pred = torch.from_numpy(block_label_map(slide["blocks"], means, downsample, tuple(label.shape[-2:])))
        for metric in metrics.values():
            metric(y_pred=[pred], y=[label])
    return {"variant": "block labels up-sampled", "seed": 0, "train_seconds": 0.0} | {
        prefix + key: metric.results()[key] for prefix, metric in metrics.items() for key in ("iou", "dice")
    }


def row_name(record: dict) -> str:
    """The table row (and ``results.json`` key) of a record."""
    return BASELINE_ROW if record["variant"] == BASELINE else record["variant"]


def table(results: list[dict]) -> str:
    """Markdown table: one row per variant, mean ± sample std over its runs (the baseline first)."""
    rows = [
        [
            row_name(runs[0]),
            len(runs),
            *runner.mean_std_cells(runs, METRICS, always_spread=True),
            f"{statistics.mean(r['train_seconds'] for r in runs):.0f}",
        ]
        for runs in runner.group_rows(results, [BASELINE, *RUNS], "variant").values()
    ]
    header = ["variant", "runs", "masked IoU", "masked Dice", "IoU", "Dice", "train s / run"]
    return "\n".join(runner.markdown_table(header, rows, right=(1, 6)))


def main(argv: list[str] | None = None) -> None:
    parser = runner.reproduction_parser(__doc__, Path("benchmarks/runs/lsr"), out_option="--work")
    parser.add_argument("--max_epochs", type=int, default=25)
    parser.add_argument("--ablation", action="store_true", help="also run the distance / variance / α ablation")
    parser.add_argument("--ablation_seeds", type=int, nargs="+", help="seeds of the ablation rows (default: --seeds)")
    parser.add_argument("--mlruns", type=Path, default=Path("mlruns"))
    parser.add_argument("--force", action="store_true", help="re-run variants already in results.json")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)

    reproduction = LSRReproduction(
        BUNDLE,
        {name: files for name, (files, _) in RUNS.items()},
        args.out,
        args.datalist,
        {"max_epochs": args.max_epochs, **dict(args.override)},
        # demo_seed: every seed trains on the same demo cohort (the bundle's follows ``seed`` by default)
        defaults={"experiment_name": "lsr_reproduce", "val_interval": args.max_epochs, "demo_seed": 0},
        metrics_file="metrics.csv",
        mlflow_dir=args.mlruns,
    )
    variants = [*VARIANTS, *(ABLATION if args.ablation else ())]
    # seed-major: an interrupted reproduction still has every variant at the first seeds
    runs = [(BASELINE, 0)] + [
        (name, seed)
        for seed in args.seeds
        for name in variants
        if not (name in ABLATION and args.ablation_seeds is not None and seed not in args.ablation_seeds)
    ]
    results = runner.run_missing(
        runs,
        lambda name, seed: run_one(reproduction, name, seed),
        runner.ResultsFile(args.out / "results.json", "variant", group_by=row_name, legacy_key=LEGACY_KEY),
        reproduction.key,
        force=args.force,
    )
    title = f"LSR on {args.datalist or 'the demo cohort'}, test slides, seeds {args.seeds}, {args.max_epochs} epochs"
    runner.write_report(args.out, f"{title}\n\n{table([r for r in results if (r['variant'], r['seed']) in set(runs)])}")


if __name__ == "__main__":
    main()
