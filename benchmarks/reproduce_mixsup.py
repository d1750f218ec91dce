"""Reproduce the MixSup comparison: mixed vs pixel-level vs image-level (and ablations) over seeds.

Trains every method with the bundle's configs on one datalist, evaluates each run on the datalist's
test slides (specificity at 100 % sensitivity, AUC) and prints a markdown table of mean ± std over seeds.

Example (the demo cohort, 3 seeds)::

    python benchmarks/reproduce_mixsup.py --seeds 0 1 2
    python benchmarks/reproduce_mixsup.py --datalist /data/gastric/datalist.json --seeds 0 1 2 \
        --methods mixed pixel_level image_level --override max_rounds=4 --override top_k=16

Methods (``bundles/mixsup/configs``): ``mixed`` (train.json), ``pixel_level`` (+ pixel_level.json, trained
as many epochs as the mixed run), ``image_level`` (+ image_level.json, top-k MIL from slide labels only),
``no_positive_pseudo`` (+ no_positive_pseudo.json, ablation without y_p+).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import logging
import math
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "mixsup"
CONFIGS = BUNDLE / "configs"
METHODS = {
    "mixed": [],
    "pixel_level": ["pixel_level.json"],
    "image_level": ["image_level.json"],
    "no_positive_pseudo": ["no_positive_pseudo.json"],
}


def _parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--override expects key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def run_folder(method: str, seed: int, datalist: str | None, out: Path, overrides: dict) -> Path:
    """``out/runs_<tag>/<method>/seed_<seed>``: one folder per datalist + overrides, so that a resumed run never
    continues a run of another configuration."""
    tag = hashlib.sha1(_config_key(datalist, overrides).encode()).hexdigest()[:8]
    return out / f"runs_{tag}" / method / f"seed_{seed}"


def _settings(method: str, seed: int, datalist: str | None, out: Path, overrides: dict) -> tuple[Path, list, dict]:
    """Work folder, config files and overrides of one run."""
    from mixsup_monai.utils import run_dirs

    work = run_folder(method, seed, datalist, out, overrides)
    common = {**run_dirs(BUNDLE, work, out / "mlruns", datalist), "seed": seed, "resume": True, **overrides}
    if method == "pixel_level" and "max_rounds" in common:
        # matched training length: as many epochs as the mixed run with these overrides (METHODS.md §1)
        common["matched_rounds"] = common.pop("max_rounds")
    if method == "image_level":
        common.pop("max_rounds", None)
        common.pop("initial_epochs", None)
    files = [str(CONFIGS / "train.json")] + [str(CONFIGS / f) for f in METHODS[method]]
    return work, files, common


def _workflow(files: list, workflow_type: str, **kwargs):
    from mixsup_monai.utils import run_bundle

    run_bundle(CONFIGS.parent, [Path(f).name for f in files], workflow_type, check_properties=False, **kwargs)


def _evaluate(files: list, common: dict, checkpoint: Path, eval_dir: Path) -> dict:
    """Test metrics of one checkpoint (exported model or a round checkpoint)."""
    _workflow(
        files + [str(CONFIGS / "evaluate.json")], "eval", **common, ckpt_path=str(checkpoint), eval_dir=str(eval_dir)
    )
    return json.loads((eval_dir / "test_metrics.json").read_text())


def run_one(method: str, seed: int, datalist: str | None, out: Path, overrides: dict) -> dict:
    """Train ``method`` with ``seed`` and evaluate it on the test slides; returns the test metrics.

    Two selections are evaluated: the bundle's (lowest stage-2 training loss, the paper's rule) and the
    round with the lowest validation loss (``*_val`` keys).
    """
    import torch

    work, files, common = _settings(method, seed, datalist, out, overrides)
    _workflow(files, "train", **common)
    records = json.loads((work / "models" / "rounds.json").read_text())["rounds"]
    train_s = sum(r["time_s"] for r in records)  # the rounds' own time: right also for a resumed run
    metrics = _evaluate(files, common, work / "models" / "model.pt", work / "eval" / "test")
    selected = torch.load(work / "models" / "model.pt", map_location="cpu", weights_only=False)["round"]
    result = {
        "method": method,
        "seed": seed,
        "config": _config_key(datalist, overrides),
        "spec_at_100_sens": metrics["spec_at_100_sens"],
        "auc": metrics["auc"],
        "selected_round": int(selected),
        "rounds": len(records),
        "train_s": round(train_s, 1),
    }
    return add_validation_selection(result, datalist, out, overrides)


def add_validation_selection(result: dict, datalist: str | None, out: Path, overrides: dict) -> dict:
    """Add the test metrics of the round with the lowest validation loss (``val_round``, ``*_val``)."""
    from mixsup_monai.handlers.round_selection import select_round

    work, files, common = _settings(result["method"], result["seed"], datalist, out, overrides)
    records = json.loads((work / "models" / "rounds.json").read_text())["rounds"]
    val_round = select_round(records, "val_loss", "min")
    if val_round == result["selected_round"]:
        metrics = {"spec_at_100_sens": result["spec_at_100_sens"], "auc": result["auc"]}
    else:
        checkpoint = work / "models" / "rounds" / f"round_{val_round:02d}.pt"
        metrics = _evaluate(files, common, checkpoint, work / "eval" / f"test_round_{val_round:02d}")
    return {
        **result,
        "val_round": val_round,
        "spec_at_100_sens_val": metrics["spec_at_100_sens"],
        "auc_val": metrics["auc"],
    }


def _config_key(datalist: str | None, overrides: dict) -> str:
    return json.dumps({"datalist": datalist, "overrides": overrides}, sort_keys=True, default=str)


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(results: list[dict]) -> str:
    """Markdown table: one row per method, mean ± std (sample std) over seeds, then the per-seed runs."""
    lines = [
        "| method | spec. @ 100 % sens. | AUC | seeds |",
        "|---|---|---|---|",
    ]
    for method in dict.fromkeys(r["method"] for r in results):
        rows = [r for r in results if r["method"] == method]
        lines.append(
            f"| {method} | {_mean_std([r['spec_at_100_sens'] for r in rows])} | {_mean_std([r['auc'] for r in rows])} "
            f"| {len(rows)} |"
        )
        if any(r["rounds"] > 1 for r in rows):
            lines.append(
                f"| {method}, round chosen on validation | {_mean_std([r['spec_at_100_sens_val'] for r in rows])} | "
                f"{_mean_std([r['auc_val'] for r in rows])} | {len(rows)} |"
            )
    lines += [
        "",
        "| method | seed | spec. @ 100 % sens. | AUC | round (stage-2 loss) | val-chosen round: spec. / AUC | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['method']} | {r['seed']} | {r['spec_at_100_sens']:.3f} | {r['auc']:.3f} | "
            f"{r['selected_round']} of 0-{r['rounds'] - 1} | {r['val_round']}: {r['spec_at_100_sens_val']:.3f} / "
            f"{r['auc_val']:.3f} | {r['train_s']} |"
        )
    return "\n".join(lines)


def run_missing(methods, seeds, run, results_file: Path, key: str, upgrade=None) -> list[dict]:
    """Run ``run(method, seed)`` for every pair not yet in ``results_file`` with config ``key``, saving after each.

    Args:
        upgrade: optional ``(field, fn)``: records of ``key`` written by an older version of a script (without
            ``field``) are replaced by ``fn(record)`` and saved, so that old runs are not retrained.

    Returns:
        the records of config ``key`` (runs of another datalist / overrides do not count).
    """
    previous: list[dict] = json.loads(results_file.read_text()) if results_file.is_file() else []
    done = {(r["method"], r["seed"]) for r in previous if r.get("config") == key}

    def save() -> None:
        results_file.parent.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(previous, indent=2))

    for seed in seeds:
        for method in methods:
            if (method, seed) in done:
                print(f"{method} seed {seed}: already in {results_file}, skipped", file=sys.stderr)
                continue
            print(f"{method} seed {seed} ...", file=sys.stderr)
            previous.append(run(method, seed))
            save()
    if upgrade is not None:
        field, fn = upgrade
        for i, r in enumerate(previous):
            if r.get("config") == key and field not in r:
                previous[i] = fn(r)
                save()
    return [r for r in previous if r.get("config") == key]


def parse_args(argv: list[str] | None, doc: str, methods: list[str], default: list[str], name: str):
    """The command line shared by the reproduction scripts (``--datalist --seeds --methods --out --override``)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--datalist", default=None, help="datalist of the contract (default: the bundle's demo cohort)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=default, choices=methods)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "runs" / name, help="runs and tables")
    parser.add_argument(
        "--override", type=_parse_override, action="append", default=[], help="config override key=value (repeatable)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__, list(METHODS), ["mixed", "pixel_level", "image_level"], "mixsup")
    logging.basicConfig(level=logging.WARNING)
    overrides = dict(args.override)
    results_file = args.out / "results.json"
    key = _config_key(args.datalist, overrides)
    results = run_missing(
        args.methods,
        args.seeds,
        lambda m, s: run_one(m, s, args.datalist, args.out, overrides),
        results_file,
        key,
        upgrade=("auc_val", lambda r: add_validation_selection(r, args.datalist, args.out, overrides)),
    )
    wanted = [r for r in results if r["method"] in args.methods and r["seed"] in args.seeds]
    text = table(wanted)
    (args.out / "results.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
