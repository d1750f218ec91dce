"""The MixSup bundle end to end through monai.bundle: train (rounds) -> evaluate -> inference, tiny settings."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import pytest
import torch

BUNDLE = "mixsup"

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


def test_train_evaluate_inference(bundle, workspace):
    root = workspace
    train = bundle.run(["train.json"], "train", root)
    runner = train.parser.get_parsed_content("rounds#runner")
    assert [r["round"] for r in runner.records] == [0, 1]
    selection = json.loads((root / "models" / "selection.json").read_text())
    assert selection["selection_metric"] == "stage2_loss"
    assert selection["files"] == {"model": "model.pt", "classifier": "classifier.pt"}
    best = torch.load(root / "models" / "rounds" / f"round_{selection['round']:02d}.pt", weights_only=False)
    for entry, name in selection["files"].items():  # plain state dicts of the selected round
        exported = torch.load(root / "models" / name, weights_only=True)
        assert exported.keys() == best[entry].keys()
        assert all(torch.equal(exported[k], best[entry][k]) for k in exported)
    state = json.loads((root / "models" / "rounds.json").read_text())
    assert state["rounds"][1]["pseudo_labels"]["pseudo/patches"] > 0
    table = (root / "eval" / "rounds.md").read_text()
    assert "pseudo/kept" in table and "stage2_loss" in table and table.count("**yes**") == 1
    assert (root / "eval" / "round_heatmaps" / "montage.png").is_file()

    client, run = bundle.mlflow_run(root, "mixsup")
    assert run.info.status == "FINISHED" and run.data.params["T"] == "0.4" and run.data.params["V"] == "4.0"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "stage2_loss")) == [0, 1]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "pseudo/dropped")] == [1]
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2  # one per M-step epoch
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"heatmaps", "rounds.md", "montage.png"} <= artifacts, artifacts

    bundle.run(["train.json", "evaluate.json"], "eval", root)
    metrics = json.loads((root / "eval" / "test" / "test_metrics.json").read_text())
    assert 0.0 <= metrics["auc"] <= 1.0 and 0.0 <= metrics["spec_at_100_sens"] <= 1.0
    assert (root / "eval" / "test" / "test_roc.png").is_file()
    assert len(list((root / "eval" / "test").glob("*_heatmap.png"))) == metrics["n_positive"] + metrics["n_negative"]

    slides = bundle.held_out_slides(2)
    bundle.infer(
        root,
        slides,
        **{k: v for k, v in TINY.items() if k in ("patch_size", "patch_level", "top_k", "network_def#features")},
        **{"stage2_network_def#channels": [4, 8], "stage2_network_def#strides": [2, 2]},
    )
    for slide in slides:
        stem = Path(slide).stem
        assert (root / "inference" / f"{stem}_heatmap.png").is_file()
        result = json.loads((root / "inference" / f"{stem}.json").read_text())
        assert 0.0 <= result["probability"] <= 1.0 and not math.isnan(result["probability"])
        assert 1 <= len(result["top_k"]) <= 2 and {"x", "y", "width", "height", "level"} <= set(result["top_k"][0])
        tiles = json.loads((root / "inference" / f"{stem}_top_k.geojson").read_text())["features"]
        assert [f["properties"]["measurements"]["patch_probability"] for f in tiles] == [
            pytest.approx(p["patch_probability"]) for p in result["top_k"]
        ]
    tiny = {k: TINY[k] for k in ("patch_size", "network_def#features")}
    bundle.check_tile_labels(root, slides[0], {0, 1}, network_mpp=4.0, **tiny)  # patch_level 2: 4 um/px


def test_command_line_resumes_a_finished_run_without_recomputing(bundle, tmp_path):
    """The user's command, ``python -m monai.bundle run --config_file bundles/mixsup/configs/train.json``, twice."""
    args = bundle.command(["train.json"], bundle.overrides(tmp_path, max_rounds=0))
    first = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = tmp_path / "models" / "rounds" / "round_00.pt"
    mtime = checkpoint.stat().st_mtime_ns
    second = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "nothing to recompute" in second.stdout + second.stderr
    assert checkpoint.stat().st_mtime_ns == mtime and (tmp_path / "models" / "model.pt").is_file()


def test_bad_slide_label_is_refused_naming_file_and_key(bundle, tmp_path):
    bad = bundle.edited_datalist(tmp_path / "bad_datalist.json", lambda data: data["training"][0].update(label=2))
    cause = bundle.datalist_error(bad, tmp_path)
    assert re.search(r"bad_datalist\.json: training\[0\].*key 'label': slide label 2 out of range", str(cause))
