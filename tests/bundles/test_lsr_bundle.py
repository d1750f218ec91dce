"""The LSR bundle end to end: train -> evaluate -> inference through monai.bundle, on a tiny demo cohort."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

BUNDLE = "lsr"
TINY = {"max_epochs": 2, "val_interval": 1, "group_size": 4}


def read_metrics(folder: Path) -> dict[str, float]:
    values = {}
    with open(folder / "metrics.csv") as f:
        for row in csv.reader(f):
            if len(row) >= 2:
                values[row[0]] = float(row[1])
    return values


def test_train_evaluate_inference(bundle, workspace):
    root = workspace
    train = bundle.run(["train.json"], "train", root)
    assert train.trainer.state.epoch == 2
    assert (root / "models" / "model.pt").is_file()
    metrics = read_metrics(root / "eval")
    for name in ("val_masked_iou", "val_masked_dice", "val_iou", "val_dice"):
        assert 0.0 <= metrics[name] <= 1.0 and not math.isnan(metrics[name]), metrics
    maps = sorted((root / "eval" / "validation_maps").glob("*_heatmap.png"))
    assert maps, "validation heat maps were not written"

    # the MLflow run holds the parameters, per-epoch loss, validation metrics and the overlay PNGs
    client, run = bundle.mlflow_run(root, "lsr")
    assert run.data.params["formulation"] == "intra_inter"
    assert run.data.params["group_size"] == "4"
    assert "train_loss" in run.data.metrics and "val_masked_iou" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert any(p.endswith("_heatmap.png") for p in artifacts), artifacts

    bundle.run(["train.json", "evaluate.json"], "eval", root)
    test_metrics = read_metrics(root / "eval")
    assert 0.0 <= test_metrics["val_masked_iou"] <= 1.0
    assert sorted((root / "eval" / "test_maps").glob("*_prob.png"))

    slides = bundle.held_out_slides()
    bundle.infer(root, slides)
    for slide in slides:
        stem = Path(slide).stem
        for name in (
            f"{stem}_prob.png",
            f"{stem}_classes.png",
            f"{stem}_overlay.png",
            f"{stem}_prob.tif",
            f"{stem}.geojson",
        ):
            assert (root / "inference" / name).is_file(), name
        assert json.loads((root / "inference" / f"{stem}.geojson").read_text())["type"] == "FeatureCollection"
    bundle.check_tile_labels(root, slides[0], values={0, 1})


def test_command_line_run_finds_its_bundle_root(bundle, tmp_path):
    """The user's command, ``python -m monai.bundle run --config_file bundles/lsr/configs/train.json``."""
    args = bundle.command(["train.json"], bundle.overrides(tmp_path, max_epochs=1))
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "models" / "model.pt").is_file()


def test_two_process_ddp_training_with_gloo(bundle, tmp_path):
    """``multi_gpu_train.json`` under torchrun: 2 CPU processes, disjoint batches, metrics summed over ranks."""
    # the demo's 2 test slides: one per rank, so validation also runs distributed
    overrides = bundle.overrides(tmp_path, max_epochs=1, **{"validate#section": "test"})
    command = bundle.command(["train.json", "multi_gpu_train.json"], overrides)
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", *command[1:]]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "models" / "model.pt").is_file()
    maps = {p.name for p in (tmp_path / "eval" / "test_maps").glob("*_prob.png")}
    assert len(maps) == 2, maps  # each rank wrote the slide it evaluated
    metrics = read_metrics(tmp_path / "eval")
    assert 0.0 <= metrics["val_masked_iou"] <= 1.0
