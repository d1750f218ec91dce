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
import shutil
import sys
from pathlib import Path

from mixsup_monai.utils import reproduce as runner

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "npl"
METHODS = runner.config_methods(
    "proposed", "pseudo_label", "supervised", "fixed_threshold", "single_negative", "no_npl", "npl_only"
)
MAIN = ["proposed", "pseudo_label", "supervised"]
#: settings of every run: resume an interrupted run; every seed trains on the same demo cohort (the bundle's
#: demo follows ``seed`` by default), the one the committed tables were measured on
DEFAULTS = {"resume": True, "demo_seed": 0}
METRICS = ("op", "pc", "miou", "sae_mean")


def share_round_zero(reproduction: runner.Reproduction, method: str, seed: int) -> bool:
    """Seed ``method``'s work folder with round 0 of another method of the same seed, if one finished it; True if so.

    The copy keeps round 0's record and checkpoint only (not its pseudo labels, which depend on the rule)
    and no settings (``config``), so the method resumes at round 1 with its own rule.
    """
    work = reproduction.folder(method, seed)
    state_file = work / "models" / "rounds.json"
    if state_file.is_file():
        return False
    for other in METHODS:
        src = reproduction.folder(other, seed) / "models"
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


def run_one(reproduction: runner.Reproduction, method: str, seed: int) -> dict:
    """Train ``method`` with ``seed`` (resuming) and evaluate its selected round on the test slides."""
    shared = share_round_zero(reproduction, method, seed)
    result, records = reproduction.train_rounds(method, seed, METRICS)
    result["round0_shared"] = shared or "copied_from" in records[0]
    result["train_s"] = round(sum(r["time_s"] for r in records[1:] if "copied_from" not in r), 1)
    result["round0_s"] = records[0]["time_s"]
    return add_selections(reproduction, result)


#: other round selections evaluated on the test slides: (suffix, row label, record metric or None = last round)
SELECTIONS = (("miou_sel", "round chosen on val mIoU", "val_miou"), ("last", "last round", None))


def add_selections(reproduction: runner.Reproduction, result: dict) -> dict:
    """Add the test metrics of the round with the highest validation mIoU (``*_miou_sel``) and of the last round."""
    from mixsup_monai.handlers.round_selection import select_round

    method, seed = result["method"], result["seed"]
    records = reproduction.round_records(method, seed)
    measured = {result["selected_round"]: {k: result[k] for k in METRICS}}
    for suffix, _, metric in SELECTIONS:
        chosen = select_round(records, metric, "max") if metric else len(records) - 1
        metrics = reproduction.evaluate_round(method, seed, chosen, measured)
        result = {**result, f"{suffix}_round": chosen, **{f"{k}_{suffix}": float(metrics[k]) for k in METRICS}}
    return result


def table(results: list[dict]) -> str:
    """Markdown table: one row per method, mean ± std (sample std) over seeds, then the per-seed runs."""
    summary = runner.summary_rows(results, METHODS, METRICS, [(suffix, label) for suffix, label, _ in SELECTIONS])
    runs = [
        [
            *runner.round_run_cells(r, METRICS),
            f"{r['miou_sel_round']}: {r['miou_miou_sel']:.3f}",
            f"{r['last_round']}: {r['miou_last']:.3f}",
            f"{r['train_s']} ({r['round0_s']})",
        ]
        for r in sorted(results, key=lambda r: (list(METHODS).index(r["method"]), r["seed"]))
    ]
    header = ["method", "seed", "OP", "PC", "mIoU", "SAE", "round (val loss)", "val-mIoU round: mIoU"]
    lines = runner.markdown_table(["method", "OP", "PC", "mIoU", "SAE (test)", "seeds"], summary)
    return "\n".join([*lines, "", *runner.markdown_table([*header, "last round: mIoU", "s"], runs)])


def main(argv: list[str] | None = None) -> int:
    template = runner.Reproduction(BUNDLE, METHODS, REPO / "benchmarks" / "runs" / "npl", defaults=DEFAULTS)
    # the table: every method and seed of this datalist + overrides run so far (ablations join the main table)
    return runner.reproduce(
        argv, template, run_one, table, __doc__.split("\n\n")[0], MAIN, ("miou_last", add_selections)
    )


if __name__ == "__main__":
    sys.exit(main())
