"""Tests of the reproduction runner (``mixsup_monai.utils.reproduce``) and of the scripts built on it, no training."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest

from mixsup_monai.utils import reproduce
from mixsup_monai.utils.reproduce import (
    Reproduction,
    ResultsFile,
    config_key,
    group_rows,
    mean_std,
    parse_override,
    reproduction_parser,
    run_folder,
    run_missing,
    write_report,
)

REPO = Path(__file__).resolve().parents[2]


def _script(name: str):
    """A benchmark script, imported as a module (they are not part of the package)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_bundle_runs(monkeypatch):
    """Fail any bundle run or config resolution: the code under test must not train or evaluate."""

    def fail(*args, **kwargs):
        raise AssertionError(f"a bundle workflow was started: {args}")

    monkeypatch.setattr(reproduce, "run_bundle", fail)
    monkeypatch.setattr(Reproduction, "default_datalist", fail)


# ---- command line ------------------------------------------------------------------------------------------------


def test_parser_reads_the_shared_options(tmp_path):
    parser = reproduction_parser("doc", tmp_path / "default", methods=["a", "b", "c"], default_methods=["a", "b"])
    args = parser.parse_args([])
    assert (args.datalist, args.seeds, args.methods, args.out, args.override) == (
        None,
        [0, 1, 2],
        ["a", "b"],
        tmp_path / "default",
        [],
    )
    args = parser.parse_args(
        ["--datalist", "d.json", "--seeds", "3", "4", "--methods", "c", "--out", "x"]
        + ["--override", "max_rounds=4", "--override", "name=abc", "--override", "lr=1e-3", "--override", "l=[1, 2]"]
    )
    assert (args.datalist, args.seeds, args.methods, args.out) == ("d.json", [3, 4], ["c"], Path("x"))
    assert dict(args.override) == {"max_rounds": 4, "name": "abc", "lr": 1e-3, "l": [1, 2]}
    with pytest.raises(SystemExit):
        parser.parse_args(["--methods", "z"])  # not a method of the script
    with pytest.raises(SystemExit):
        parser.parse_args(["--override", "no_equals_sign"])


def test_parser_without_methods_and_another_out_option(tmp_path):
    parser = reproduction_parser("doc", tmp_path, out_option="--work")
    assert parser.parse_args(["--work", "w"]).out == Path("w")
    with pytest.raises(SystemExit):
        parser.parse_args(["--methods", "a"])


def test_parse_override_keeps_text_that_is_not_a_literal():
    assert parse_override("a=b=c") == ("a", "b=c")
    assert parse_override("flag=True") == ("flag", True)
    assert parse_override("x=") == ("x", "")


# ---- configurations and run folders ------------------------------------------------------------------------------


def test_config_key_is_the_recorded_string_and_ignores_override_order():
    # the exact string of the committed NPL table's records: a change of format orphans every stored run
    assert config_key(None, {}) == '{"datalist": null, "overrides": {}}'
    assert config_key("d.json", {"b": 1, "a": 2}) == config_key("d.json", {"a": 2, "b": 1})
    assert config_key("d.json", {"a": 1}) != config_key("e.json", {"a": 1})


def test_run_folder_is_keyed_by_config_method_and_seed(tmp_path):
    key = config_key(None, {})
    assert run_folder(tmp_path, "mixed", 0, key) == tmp_path / "runs_4cb9121e" / "mixed" / "seed_0"
    folders = {
        run_folder(tmp_path, m, s, k) for m in ("a", "b") for s in (0, 1) for k in (key, config_key(None, {"x": 1}))
    }
    assert len(folders) == 8
    # LSR's prose names make one path component
    folder = run_folder(tmp_path, "intra+inter, groups of 12 blocks (paper: 10–15)", 2, key)
    assert folder.parent.name == "intra+inter_groups_of_12_blocks_paper_10_15_" and folder.name == "seed_2"


def test_settings_files_and_mixsup_matched_length(tmp_path):
    reproduction = Reproduction(
        Path("bundle"), {"a": [], "b": ["b.json"]}, tmp_path, "d.json", {"max_rounds": 4}, defaults={"resume": True}
    )
    settings = reproduction.settings("b", 3)
    assert settings["seed"] == 3 and settings["resume"] is True and settings["max_rounds"] == 4
    assert settings["datalist"] == "d.json" and settings["mlflow_dir"] == str(tmp_path / "mlruns")
    assert settings["ckpt_dir"] == str(reproduction.folder("b", 3) / "models")
    assert reproduction.files("b") == ["train.json", "b.json"]

    mixsup = _script("reproduce_mixsup")
    rep = mixsup.MixSupReproduction(mixsup.BUNDLE, mixsup.METHODS, tmp_path, None, {"max_rounds": 2})
    assert rep.settings("pixel_level", 0)["matched_rounds"] == 2 and "max_rounds" not in rep.settings("pixel_level", 0)
    assert "max_rounds" not in rep.settings("image_level", 0)
    assert rep.settings("mixed", 0)["max_rounds"] == 2


def test_evaluate_runs_evaluate_json_and_reads_its_metrics(tmp_path, monkeypatch):
    calls = []

    def fake_run_bundle(bundle, files, workflow_type, check_properties=True, **overrides):
        calls.append((files, workflow_type, overrides))
        out = Path(overrides.get("eval_dir", Path(overrides["output_dir"])))
        out.mkdir(parents=True, exist_ok=True)
        (out / "test_metrics.json").write_text(json.dumps({"auc": 0.75}))
        (out / "metrics.csv").write_text("val_iou,0.5\nval_dice,0.25\n")

    monkeypatch.setattr(reproduce, "run_bundle", fake_run_bundle)
    rep = Reproduction(Path("bundle"), {"m": ["m.json"]}, tmp_path)
    work = rep.folder("m", 0)
    assert rep.evaluate("m", 0, work / "models" / "model.pt", work / "eval" / "test") == {"auc": 0.75}
    files, workflow_type, overrides = calls[-1]
    assert (files, workflow_type) == (["train.json", "m.json", "evaluate.json"], "eval")
    assert overrides["ckpt_path"] == overrides["classifier_path"] == str(work / "models" / "model.pt")
    # a round checkpoint, into its own folder; a round already measured is not evaluated again
    assert rep.evaluate_round("m", 0, 2) == {"auc": 0.75}
    assert calls[-1][2]["ckpt_path"] == str(work / "models" / "rounds" / "round_02.pt")
    assert calls[-1][2]["eval_dir"] == str(work / "eval" / "test_round_02")
    assert rep.evaluate_round("m", 0, 1, measured={1: {"auc": 0.5}}) == {"auc": 0.5}
    assert len(calls) == 2
    # LSR: the config's checkpoint and output folder, MONAI's MetricsSaver CSV
    lsr = Reproduction(Path("bundle"), {"m": []}, tmp_path, metrics_file="metrics.csv")
    assert lsr.evaluate("m", 1) == {"val_iou": 0.5, "val_dice": 0.25}
    assert "ckpt_path" not in calls[-1][2] and "eval_dir" not in calls[-1][2]


def test_mixsup_run_through_fake_bundle_runs(tmp_path, monkeypatch):
    """A MixSup run: train, test the exported round, test the validation-chosen round (fake bundle runs)."""
    import torch

    calls = []

    def fake_run_bundle(bundle, files, workflow_type, check_properties=True, **overrides):
        calls.append((workflow_type, Path(overrides.get("ckpt_path", "")).name))
        models = Path(overrides["ckpt_dir"])
        if workflow_type == "train":
            models.mkdir(parents=True)
            rounds = [{"round": r, "time_s": 1.0 + 1.25 * r, "metrics": {"val_loss": 0.5 - 0.3 * r}} for r in (0, 1)]
            (models / "rounds.json").write_text(json.dumps({"rounds": rounds}))
            torch.save({}, models / "model.pt")
            (models / "selection.json").write_text(json.dumps({"round": 0}))
            return
        out = Path(overrides["eval_dir"])
        out.mkdir(parents=True)
        auc = {"": 0.5, "round_01.pt": 0.75}[Path(overrides.get("ckpt_path", "")).name]
        (out / "test_metrics.json").write_text(json.dumps({"auc": auc, "spec_at_100_sens": auc / 2}))

    monkeypatch.setattr(reproduce, "run_bundle", fake_run_bundle)
    mixsup = _script("reproduce_mixsup")
    rep = mixsup.MixSupReproduction(mixsup.BUNDLE, mixsup.METHODS, tmp_path, defaults={"resume": True})
    records = run_missing([("mixed", 4)], lambda m, s: mixsup.run_one(rep, m, s), tmp_path / "results.json", rep.key)
    assert calls == [("train", ""), ("eval", ""), ("eval", "round_01.pt")]  # the exported files: the config's
    assert records == [
        {
            "method": "mixed",
            "seed": 4,
            "config": rep.key,
            "spec_at_100_sens": 0.25,
            "auc": 0.5,
            "selected_round": 0,
            "rounds": 2,
            "train_s": 3.2,
            "val_round": 1,
            "spec_at_100_sens_val": 0.375,
            "auc_val": 0.75,
        }
    ]


# ---- mean ± std and tables ---------------------------------------------------------------------------------------


def test_mean_std():
    assert mean_std([]) == "n/a"
    assert mean_std([math.nan]) == "n/a"
    assert mean_std([0.5]) == "0.500"
    assert mean_std([0.5], always_spread=True) == "0.500 ± 0.000"
    assert mean_std([1.0, 2.0, 3.0]) == "2.000 ± 1.000"  # sample std
    assert mean_std([1.0, math.nan, 3.0], digits=1) == "2.0 ± 1.4"
    assert mean_std(v for v in (1.0, 3.0)) == "2.000 ± 1.414"


def test_group_rows_orders_by_names_and_drops_empty():
    records = [{"method": "b", "seed": 0}, {"method": "a", "seed": 0}, {"method": "b", "seed": 1}]
    groups = group_rows(records, ["a", "b", "c"])
    assert list(groups) == ["a", "b"] and [r["seed"] for r in groups["b"]] == [0, 1]


def test_write_report(tmp_path, capsys):
    path = write_report(tmp_path / "new", "| a |\n|---|")
    assert path.read_text() == "| a |\n|---|\n"
    assert "| a |" in capsys.readouterr().out


# ---- run_missing -------------------------------------------------------------------------------------------------


def _fake_run(calls: list, fail_on: tuple | None = None):
    def run(method: str, seed: int) -> dict:
        if (method, seed) == fail_on:
            raise RuntimeError("interrupted")
        calls.append((method, seed))
        return {"score": 10 * seed + len(method)}

    return run


def test_run_missing_skips_done_rows_and_runs_missing_ones_seed_major(tmp_path):
    key, other = config_key(None, {}), config_key("else.json", {})
    results = tmp_path / "results.json"
    done = [
        {"method": "a", "seed": 0, "config": key, "score": -1},
        {"method": "b", "seed": 1, "config": other, "score": -2},  # another configuration: does not count
    ]
    results.write_text(json.dumps(done))
    calls = []
    runs = [(m, s) for s in (0, 1) for m in ("a", "b")]
    records = run_missing(runs, _fake_run(calls), results, key)
    assert calls == [("b", 0), ("a", 1), ("b", 1)]
    assert [(r["method"], r["seed"]) for r in records] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert records[0]["score"] == -1 and records[1] == {"method": "b", "seed": 0, "config": key, "score": 1}
    saved = json.loads(results.read_text())
    assert saved[:2] == done and len(saved) == 5  # the other configuration's record is kept
    # a second call runs nothing
    assert run_missing(runs, _fake_run(calls), results, key) == records and len(calls) == 3


def test_run_missing_saves_after_each_run(tmp_path):
    results, calls = tmp_path / "sub" / "results.json", []
    with pytest.raises(RuntimeError):
        run_missing([("a", 0), ("b", 0)], _fake_run(calls, fail_on=("b", 0)), results, "k")
    assert [(r["method"], r["seed"]) for r in json.loads(results.read_text())] == [("a", 0)]


def test_run_missing_upgrades_old_records_and_force_reruns(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(
        json.dumps(
            [
                {"method": "a", "seed": 0, "config": "k", "score": 1},
                {"method": "a", "seed": 1, "config": "k", "score": 2, "extra": 0},
                {"method": "a", "seed": 2, "config": "other", "score": 3},
            ]
        )
    )
    upgraded = []

    def upgrade(record):
        upgraded.append(record["seed"])
        return {**record, "extra": 100}

    calls = []
    records = run_missing([("a", 0), ("a", 1)], _fake_run(calls), results, "k", upgrade=("extra", upgrade))
    assert calls == [] and upgraded == [0]
    assert [r["extra"] for r in records] == [100, 0]
    assert "extra" not in json.loads(results.read_text())[2]  # only records of this configuration are upgraded
    records = run_missing([("a", 1)], _fake_run(calls), results, "k", force=True)
    assert calls == [("a", 1)] and [(r["seed"], r["score"]) for r in records] == [(0, 1), (1, 11)]


def test_results_file_grouped_shape_and_legacy_records(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"row A": [{"variant": "a", "seed": 0}], "b": [{"variant": "b", "seed": 0}]}))
    results = ResultsFile(path, "variant", group_by=lambda r: "row A" if r["variant"] == "a" else r["variant"])
    assert results.load() == [{"variant": "a", "seed": 0}, {"variant": "b", "seed": 0}]
    legacy = ResultsFile(path, "variant", group_by=results.group_by, legacy_key="k")
    assert [r["config"] for r in legacy.load()] == ["k", "k"]
    calls = []
    records = run_missing([("a", 0), ("b", 1)], _fake_run(calls), legacy, "k")
    assert calls == [("b", 1)] and len(records) == 3
    saved = json.loads(path.read_text())
    assert list(saved) == ["row A", "b"] and [r["seed"] for r in saved["b"]] == [0, 1]


# ---- the scripts on their committed tables -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,argv",
    [
        (
            "mixsup",
            ["--datalist", "/tmp/mixsup_demo_v11/datalist.json"]
            + ["--methods", "mixed", "pixel_level", "image_level", "no_positive_pseudo"],
        ),
        ("npl", ["--seeds", "0", "1", "2", "3", "4"]),
        ("lsr", ["--seeds", "0", "1", "2", "--ablation", "--ablation_seeds", "0"]),
    ],
)
def test_script_resumes_its_committed_table_without_training(name, argv, tmp_path, no_bundle_runs, capsys):
    """The committed ``results.json`` is every run of the documented command: nothing runs, the table is the same."""
    committed = REPO / "benchmarks" / "runs" / name
    shutil.copy(committed / "results.json", tmp_path / "results.json")
    out_option = "--work" if name == "lsr" else "--out"
    _script(f"reproduce_{name}").main([*argv, out_option, str(tmp_path)])
    assert "..." not in capsys.readouterr().err  # every run was skipped
    assert (tmp_path / "results.json").read_bytes() == (committed / "results.json").read_bytes()
    assert (tmp_path / "results.md").read_text() == (committed / "results.md").read_text()


def test_lsr_runs_only_what_its_table_lacks(tmp_path, monkeypatch):
    """One more seed of the main variants: only those runs, appended to the committed table's groups."""
    lsr = _script("reproduce_lsr")
    shutil.copy(REPO / "benchmarks" / "runs" / "lsr" / "results.json", tmp_path / "results.json")
    calls = []
    monkeypatch.setattr(lsr, "run_one", lambda rep, name, seed: calls.append((name, seed)) or {"train_seconds": 1.0})
    with pytest.raises(KeyError):  # the fake records have no metrics for the table
        lsr.main(["--seeds", "0", "3", "--work", str(tmp_path)])
    assert calls == [(name, 3) for name in lsr.VARIANTS]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["seed"] for r in saved["intra-instance"]] == [0, 1, 2, 3]
    assert saved["intra-instance"][0]["config"] == lsr.LEGACY_KEY == saved["intra-instance"][3]["config"]
