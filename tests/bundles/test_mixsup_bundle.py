"""The MixSup bundle end to end through monai.bundle: train (rounds) -> evaluate -> inference, tiny settings."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from mixsup_monai.data import DatalistError
from mixsup_monai.demo import make_demo_cohort
from mixsup_monai.utils import run_bundle, run_dirs

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "mixsup"
CONFIGS = BUNDLE / "configs"

#: tiny but complete: the initial round and one pseudo-label round, every stage runs.
TINY = {
    "patch_size": 32,
    "patch_level": 2,
    "max_rounds": 1,
    "initial_epochs": 1,
    "epochs_per_round": 1,
    "batches_per_epoch": 2,
    "top_k": 2,
    "stage2_epochs": 1,
    "stage2_batch_size": 2,
    "network_def#features": [4, 4, 8, 8, 16, 4],
    "rounds#stage2#network_def#channels": [4, 8],
    "rounds#stage2#network_def#strides": [2, 2],
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixsup_bundle")
    datalist = make_demo_cohort("mixsup", root / "data", seed=0, n_slides=8, progress=False)
    return root, Path(datalist)


def overrides(root: Path, datalist: Path, **extra) -> dict:
    return {**run_dirs(BUNDLE, root, datalist=datalist), **TINY, **extra}


def run_workflow(config_files, workflow_type: str, **kwargs):
    return run_bundle(CONFIGS.parent, config_files, workflow_type, **kwargs)


def test_train_evaluate_inference(workspace):
    root, datalist = workspace
    train = run_workflow(["train.json"], "train", **overrides(root, datalist))
    runner = train.parser.get_parsed_content("rounds#runner")
    assert [r["round"] for r in runner.records] == [0, 1]
    exported = torch.load(root / "models" / "model.pt", weights_only=False)
    assert {"model", "classifier", "round"} <= set(exported) and exported["selection_metric"] == "stage2_loss"
    state = json.loads((root / "models" / "rounds.json").read_text())
    assert state["rounds"][1]["pseudo_labels"]["pseudo/patches"] > 0
    table = (root / "eval" / "rounds.md").read_text()
    assert "pseudo/kept" in table and "stage2_loss" in table and table.count("**yes**") == 1
    assert (root / "eval" / "round_heatmaps" / "montage.png").is_file()

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("mixsup").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["T"] == "0.4" and run.data.params["V"] == "4.0"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "stage2_loss")) == [0, 1]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "pseudo/dropped")] == [1]
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2  # one per M-step epoch
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"heatmaps", "rounds.md", "montage.png"} <= artifacts, artifacts

    run_workflow(["train.json", "evaluate.json"], "eval", **overrides(root, datalist))
    metrics = json.loads((root / "eval" / "test" / "test_metrics.json").read_text())
    assert 0.0 <= metrics["auc"] <= 1.0 and 0.0 <= metrics["spec_at_100_sens"] <= 1.0
    assert (root / "eval" / "test" / "test_roc.png").is_file()
    assert len(list((root / "eval" / "test").glob("*_heatmap.png"))) == metrics["n_positive"] + metrics["n_negative"]

    data = json.loads(datalist.read_text())
    slides = [str(datalist.parent / s["image"]) for s in data["test"][:2]]
    run_workflow(
        ["inference.json"],
        "infer",
        bundle_root=str(BUNDLE),
        ckpt_path=str(root / "models" / "model.pt"),
        output_dir=str(root / "inference"),
        input_slides=slides,
        **{k: v for k, v in TINY.items() if k in ("patch_size", "patch_level", "top_k", "network_def#features")},
        **{"stage2_network_def#channels": [4, 8], "stage2_network_def#strides": [2, 2]},
    )
    for slide in slides:
        stem = Path(slide).stem
        assert (root / "inference" / f"{stem}_heatmap.png").is_file()
        result = json.loads((root / "inference" / f"{stem}.json").read_text())
        assert 0.0 <= result["probability"] <= 1.0 and not math.isnan(result["probability"])
        assert 1 <= len(result["top_k"]) <= 2 and {"x", "y", "width", "height", "level"} <= set(result["top_k"][0])


def test_command_line_resumes_a_finished_run_without_recomputing(workspace, tmp_path):
    """The user's command, ``python -m monai.bundle run --config_file bundles/mixsup/configs/train.json``, twice."""
    root, datalist = workspace
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "train.json")]
    for key, value in overrides(tmp_path, datalist, max_rounds=0).items():
        if key != "bundle_root":
            args += [f"--{key}", str(value)]
    first = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = tmp_path / "models" / "rounds" / "round_00.pt"
    mtime = checkpoint.stat().st_mtime_ns
    second = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "nothing to recompute" in second.stdout + second.stderr
    assert checkpoint.stat().st_mtime_ns == mtime and (tmp_path / "models" / "model.pt").is_file()


def test_bad_slide_label_is_refused_naming_file_and_key(workspace, tmp_path):
    root, datalist = workspace
    data = json.loads(datalist.read_text())
    data["training"][0]["label"] = 2
    for section in ("training", "validation", "test"):
        for slide in data.get(section, []):
            for key in ("image", "mask", "tissue_mask"):
                if key in slide:
                    slide[key] = str(datalist.parent / slide[key])
    bad = tmp_path / "bad_datalist.json"
    bad.write_text(json.dumps(data))
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), workflow_type="train", **overrides(tmp_path, bad)
    )
    workflow.initialize()
    with pytest.raises(RuntimeError) as info:  # MONAI wraps the error of the config expression
        workflow.run()
    cause = info.value
    while cause is not None and not isinstance(cause, DatalistError):
        cause = cause.__cause__
    assert cause is not None, info.value
    assert re.search(r"bad_datalist\.json: training\[0\].*key 'label': slide label 2 out of range", str(cause))
