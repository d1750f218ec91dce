"""Reproduce the NPL comparison: proposed vs pseudo labelling at 0.95 vs supervised (and ablations) over seeds.

Trains every method with the bundle's configs on one datalist, evaluates each run on the datalist's
test slides (OP, PC, mIoU over patches with a known class; Tokunaga et al., Eq. 7) and prints a markdown
table of mean ± std over seeds.

Example (the demo cohort, 3 seeds; then the ablations on 2 seeds, added to the same table)::

    python benchmarks/reproduce_npl.py --seeds 0 1 2
    python benchmarks/reproduce_npl.py --seeds 0 1 --methods fixed_threshold single_negative no_npl npl_only
    python benchmarks/reproduce_npl.py --datalist /data/lung/datalist.json --seeds 0 1 2 --override max_rounds=6

Methods (``bundles/npl/configs``): ``proposed`` (train.json: adaptive positive + multi negative pseudo
labels), ``pseudo_label`` (+ pseudo_label.json: positives at a fixed 0.95 threshold, no negatives),
``supervised`` (+ supervised.json: the supervised patches only), ablations ``fixed_threshold`` (fixed 0.95
positives + multi negative), ``single_negative`` (negatives of the current round only), ``no_npl`` (adaptive
positives only) and ``npl_only`` (negatives only).

Round 0 (training on the supervised patches) is the same for every method of a seed: it is trained once
(by the first method run for that seed) and copied into the other methods' work folders, which then resume
after round 0 (their round-1 pseudo labels are made by their own rule). ``supervised`` is exactly that
round 0. Besides the bundle's selection (lowest validation loss, the paper's rule) the table shows the
test metrics of the round with the highest validation mIoU and of the last round (a fixed budget of
rounds). Work folders, MLflow runs (``<out>/mlruns``) and the tables (``<out>/results.md``, ``results.json``)
live under ``--out`` (default ``benchmarks/runs/npl``).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reproduce_mixsup import _config_key, _mean_std, parse_args, run_folder, run_missing  # noqa: E402 (shared helpers)

BUNDLE = REPO / "bundles" / "npl"
CONFIGS = BUNDLE / "configs"
METHODS = {
    "proposed": [],
    "pseudo_label": ["pseudo_label.json"],
    "supervised": ["supervised.json"],
    "fixed_threshold": ["fixed_threshold.json"],
    "single_negative": ["single_negative.json"],
    "no_npl": ["no_npl.json"],
    "npl_only": ["npl_only.json"],
}
MAIN = ["proposed", "pseudo_label", "supervised"]
METRICS = ("op", "pc", "miou", "sae_mean")


def _settings(method: str, seed: int, datalist: str | None, out: Path, overrides: dict) -> tuple[Path, list, dict]:
    """Work folder, config files and overrides of one run."""
    from mixsup_monai.utils import run_dirs

    work = run_folder(method, seed, datalist, out, overrides)
    common = {**run_dirs(BUNDLE, work, out / "mlruns", datalist), "seed": seed, "resume": True, **overrides}
    return work, ["train.json"] + METHODS[method], common


def _workflow(files: list, workflow_type: str, **kwargs) -> None:
    from mixsup_monai.utils import run_bundle

    run_bundle(BUNDLE, files, workflow_type, check_properties=False, **kwargs)


def share_round_zero(work: Path, seed: int, datalist: str | None, out: Path, overrides: dict) -> bool:
    """Seed ``work`` with round 0 of another method of the same seed (if one finished it); True if copied.

    The copy keeps round 0's record and checkpoint only (not its pseudo labels, which depend on the rule)
    and no settings (``config``), so the method resumes at round 1 with its own rule.
    """
    state_file = work / "models" / "rounds.json"
    if state_file.is_file():
        return False
    for other in METHODS:
        src = run_folder(other, seed, datalist, out, overrides) / "models"
        if not (src / "rounds.json").is_file() or not (src / "rounds" / "round_00.pt").is_file():
            continue
        state = json.loads((src / "rounds.json").read_text())
        if not state.get("rounds"):
            continue
        (work / "models" / "rounds").mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / "rounds" / "round_00.pt", work / "models" / "rounds" / "round_00.pt")
        record = dict(state["rounds"][0])
        record["checkpoint"] = str(work / "models" / "rounds" / "round_00.pt")
        record["copied_from"] = other
        state.update(rounds=[record], config={})
        state_file.write_text(json.dumps(state, indent=2))
        return True
    return False


def _evaluate(files: list, common: dict, checkpoint: Path, eval_dir: Path) -> dict:
    """Test metrics of one checkpoint (the exported model or a round checkpoint)."""
    _workflow(files + ["evaluate.json"], "eval", **common, ckpt_path=str(checkpoint), eval_dir=str(eval_dir))
    return json.loads((eval_dir / "test_metrics.json").read_text())


def run_one(method: str, seed: int, datalist: str | None, out: Path, overrides: dict) -> dict:
    """Train ``method`` with ``seed`` (resuming) and evaluate its selected round on the test slides."""
    import torch

    work, files, common = _settings(method, seed, datalist, out, overrides)
    shared = share_round_zero(work, seed, datalist, out, overrides)
    _workflow(files, "train", **common)
    records = json.loads((work / "models" / "rounds.json").read_text())["rounds"]
    metrics = _evaluate(files, common, work / "models" / "model.pt", work / "eval" / "test")
    selected = torch.load(work / "models" / "model.pt", map_location="cpu", weights_only=False)["round"]
    result = {
        "method": method,
        "seed": seed,
        "config": _config_key(datalist, overrides),
        **{k: float(metrics[k]) for k in METRICS},
        "selected_round": int(selected),
        "rounds": len(records),
        "round0_shared": shared or "copied_from" in records[0],
        "train_s": round(sum(r["time_s"] for r in records[1:] if "copied_from" not in r), 1),
        "round0_s": records[0]["time_s"],
    }
    return add_selections(result, datalist, out, overrides)


#: other round selections evaluated on the test slides: (suffix, row label, record metric or None = last round)
SELECTIONS = (("miou_sel", "round chosen on val mIoU", "val_miou"), ("last", "last round", None))


def add_selections(result: dict, datalist: str | None, out: Path, overrides: dict) -> dict:
    """Add the test metrics of the round with the highest validation mIoU (``*_miou_sel``) and of the last round."""
    from mixsup_monai.handlers.round_selection import select_round

    work, files, common = _settings(result["method"], result["seed"], datalist, out, overrides)
    records = json.loads((work / "models" / "rounds.json").read_text())["rounds"]
    for suffix, _, metric in SELECTIONS:
        chosen = select_round(records, metric, "max") if metric else len(records) - 1
        if chosen == result["selected_round"]:
            metrics = {k: result[k] for k in METRICS}
        else:
            checkpoint = work / "models" / "rounds" / f"round_{chosen:02d}.pt"
            metrics = _evaluate(files, common, checkpoint, work / "eval" / f"test_round_{chosen:02d}")
        result = {**result, f"{suffix}_round": chosen, **{f"{k}_{suffix}": float(metrics[k]) for k in METRICS}}
    return result


def table(results: list[dict]) -> str:
    """Markdown table: one row per method, mean ± std (sample std) over seeds, then the per-seed runs."""
    lines = ["| method | OP | PC | mIoU | SAE (test) | seeds |", "|---|---|---|---|---|---|"]
    for method in [m for m in METHODS if any(r["method"] == m for r in results)]:
        rows = [r for r in results if r["method"] == method]
        cells = " | ".join(_mean_std([r[k] for r in rows]) for k in METRICS)
        lines.append(f"| {method} | {cells} | {len(rows)} |")
        for suffix, label, _ in SELECTIONS if any(r["rounds"] > 1 for r in rows) else ():
            cells = " | ".join(_mean_std([r[f"{k}_{suffix}"] for r in rows]) for k in METRICS)
            lines.append(f"| {method}, {label} | {cells} | {len(rows)} |")
    lines += [
        "",
        "| method | seed | OP | PC | mIoU | SAE | round (val loss) | val-mIoU round: mIoU | last round: mIoU | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: (list(METHODS).index(r["method"]), r["seed"])):
        lines.append(
            f"| {r['method']} | {r['seed']} | {r['op']:.3f} | {r['pc']:.3f} | {r['miou']:.3f} | {r['sae_mean']:.3f} | "
            f"{r['selected_round']} of 0-{r['rounds'] - 1} | {r['miou_sel_round']}: {r['miou_miou_sel']:.3f} | "
            f"{r['last_round']}: {r['miou_last']:.3f} | {r['train_s']} ({r['round0_s']}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__, list(METHODS), MAIN, "npl")
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
        upgrade=("miou_last", lambda r: add_selections(r, args.datalist, args.out, overrides)),
    )
    text = table(results)  # every method and seed of this datalist + overrides run so far
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
