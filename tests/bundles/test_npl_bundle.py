"""The NPL bundle end to end through monai.bundle: train (rounds) -> evaluate -> inference, tiny settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

BUNDLE = "npl"
CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / BUNDLE / "configs"

#: tiny but complete: the initial round and one pseudo-label round, every stage runs.
TINY = {
    "patch_size": 32,
    "patch_level": 2,
    "max_rounds": 1,
    "initial_epochs": 1,
    "epochs_per_round": 1,
    "batches_per_epoch": 2,
    "batch_size": 4,
    "network_def#width_mult": 0.25,
}
OVERRIDE_FILES = sorted(p.name for p in CONFIGS.glob("*.json") if p.name not in ("metadata.json", "evaluate.json"))


@pytest.mark.parametrize("name", OVERRIDE_FILES)
def test_every_config_parses_with_train(name, bundle, workspace):
    """Every override file combines with train.json (inference.json stands alone, slide_inference.json goes on top
    of it) and resolves its runner."""
    inference = name in ("inference.json", "slide_inference.json")
    files = [str(CONFIGS / ("inference.json" if inference else "train.json"))]
    if name not in ("train.json", "inference.json"):
        files.append(str(CONFIGS / name))
    workflow = ConfigWorkflow(config_file=files, workflow_type="infer" if inference else "train")
    workflow.parser.update({k: v for k, v in bundle.overrides(workspace).items() if k not in TINY})
    if name == "inference.json":
        assert type(workflow.parser.get_parsed_content("inferer")).__name__ == "PatchClassifierInferer"
        return
    if name == "slide_inference.json":
        workflow.parser.update({"input_slides": ["/nowhere.tif"]})
        assert workflow.parser.get_parsed_content("inferer").proportion_classes[0] == "lepidic"
        return
    if name == "multi_gpu_train.json":
        assert workflow.parser.get("network")["_target_"] == "torch.nn.parallel.DistributedDataParallel"
        return
    selector = workflow.parser.get_parsed_content("rounds#selector")
    max_rounds = workflow.parser.get_parsed_content("max_rounds")
    expected = {
        "train.json": (True, True, True),
        "supervised.json": (True, True, True),
        "pseudo_label.json": (False, True, False),
        "fixed_threshold.json": (False, True, True),
        "single_negative.json": (True, True, True),
        "no_npl.json": (True, True, False),
        "npl_only.json": (True, False, True),
        "paper.json": (True, True, True),
    }[name]
    assert (selector.adaptive, selector.positive, selector.negative) == expected
    assert workflow.parser.get_parsed_content("accumulate_negatives") is (
        name != "single_negative.json" and expected[2]
    )
    assert (max_rounds == 0) is (name == "supervised.json")
    if name == "paper.json":
        assert workflow.parser.get_parsed_content("patch_size") == 224 and workflow.parser["batch_size"] == 18


def test_train_evaluate_inference(bundle, workspace):
    root = workspace
    train = bundle.run(["train.json"], "train", root)
    runner = train.parser.get_parsed_content("rounds#runner")
    assert [r["round"] for r in runner.records] == [0, 1]
    labels = runner.records[1]["pseudo_labels"]
    assert labels["pseudo/slides"] >= 1 and labels["pseudo/patches"] > 0
    assert labels["sizes"]["positive"] + labels["sizes"]["negative"] > 0
    selection = json.loads((root / "models" / "selection.json").read_text())
    assert selection["selection_metric"] == "val_loss" and selection["files"] == {"model": "model.pt"}
    exported = torch.load(root / "models" / "model.pt", weights_only=True)
    train.parser.get_parsed_content("network").load_state_dict(exported)  # a plain state dict of the network
    table = (root / "eval" / "rounds.md").read_text()
    assert "val_loss" in table and table.count("**yes**") == 1
    header = (root / "eval" / "rounds.csv").read_text().splitlines()[0].split(",")
    assert {"pseudo/sae_mean", "weak/sae_mean", "pseudo/negative_accumulated", "val_miou"} <= set(header)

    client, run = bundle.mlflow_run(root, "npl")
    assert run.info.status == "FINISHED" and run.data.params["adaptive"] == "True"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_loss")) == [0, 1]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "pseudo/sae_mean")] == [1]
    assert len(client.get_metric_history(run.info.run_id, "weak/sae_mean")) == 2  # SAE after each round

    bundle.run(["train.json", "evaluate.json"], "eval", root)
    metrics = json.loads((root / "eval" / "test" / "test_metrics.json").read_text())
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("op", "pc", "miou", "sae_mean"))
    assert sum(metrics["counts"]["tp"]) + sum(metrics["counts"]["fp"]) == sum(
        r["scored_patches"] for r in metrics["per_slide"]
    )
    assert (root / "eval" / "test" / "test_per_slide.csv").is_file()

    slides = bundle.held_out_slides()
    bundle.infer(root, slides, **{k: TINY[k] for k in ("patch_size", "patch_level", "network_def#width_mult")})
    for slide in slides:
        stem = Path(slide).stem
        assert (root / "inference" / f"{stem}_overlay.png").is_file()
        from PIL import Image

        with Image.open(root / "inference" / f"{stem}_classes.png") as img:
            values = set(img.getdata())
        assert values <= set(range(6)) | {255} and values - {255}
        result = json.loads((root / "inference" / f"{stem}_proportions.json").read_text())
        assert list(result["proportions"]) == ["lepidic", "acinar", "papillary", "micropapillary", "solid"]
        assert sum(result["proportions"].values()) == pytest.approx(1.0) or result["tumour_patches"] == 0
    tiny = {k: TINY[k] for k in ("patch_size", "network_def#width_mult")}
    bundle.check_tile_labels(root, slides[0], set(range(6)), network_mpp=4.0, **tiny)  # patch_level 2: 4 um/px


def test_resume_after_a_stop_continues_with_the_next_round(bundle, tmp_path, capsys):
    """A run stopped after round 0, run again with one more round: round 0 is loaded, not recomputed."""
    bundle.run(["train.json"], "train", tmp_path, max_rounds=0)
    checkpoint = tmp_path / "models" / "rounds" / "round_00.pt"
    mtime = checkpoint.stat().st_mtime_ns
    capsys.readouterr()
    bundle.run(["train.json"], "train", tmp_path, max_rounds=1)
    assert "resuming after round 0" in capsys.readouterr().out
    assert checkpoint.stat().st_mtime_ns == mtime
    state = json.loads((tmp_path / "models" / "rounds.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [0, 1] and (
        tmp_path / "models" / "rounds" / "round_01.pt"
    ).is_file()
    with pytest.raises(RuntimeError) as info:  # resuming with other settings would mix two runs
        bundle.run(["train.json", "no_npl.json"], "train", tmp_path, max_rounds=2)
    assert "was written with other settings" in str(info.value.__cause__ or info.value)


def _weak(data: dict) -> dict:
    return next(s for s in data["training"] if s.get("proportions"))


BAD_DATALISTS = [
    (
        "proportions_not_summing_to_one",
        lambda d: _weak(d)["proportions"].update(lepidic=_weak(d)["proportions"]["lepidic"] + 0.3),
        r"training\[\d+\].*key 'proportions': fractions sum to 1\.3\d+, expected 1",
    ),
    (
        "class_not_in_classes",
        lambda d: _weak(d)["proportions"].update(mucinous=0.0),
        r"training\[\d+\].*key 'proportions\.mucinous': class 'mucinous' is not in classes",
    ),
]


@pytest.mark.parametrize("name, edit, match", BAD_DATALISTS, ids=[c[0] for c in BAD_DATALISTS])
def test_bad_proportions_are_refused_naming_file_slide_and_key(name, edit, match, bundle, tmp_path):
    cause = bundle.datalist_error(bundle.edited_datalist(tmp_path / "bad_datalist.json", edit), tmp_path)
    assert re.search(r"bad_datalist\.json: " + match, str(cause)), str(cause)
    assert "npl_weak_" in str(cause)  # the slide is named


def test_weak_slide_without_tumour_patch_is_skipped_by_name(bundle, tmp_path, capsys):
    """A slide with proportions whose tumour outline is empty: NPL's E-step skips it with a warning naming it."""
    from PIL import Image

    def edit(data):
        weak = _weak(data)
        with Image.open(weak["tumour_mask"]) as img:
            empty = Image.new("L", img.size, 0)
        empty.save(tmp_path / "empty_tumour.png")
        weak["tumour_mask"] = str(tmp_path / "empty_tumour.png")

    bad = bundle.edited_datalist(tmp_path / "datalist.json", edit)
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), workflow_type="train", **bundle.overrides(tmp_path, bad)
    )
    workflow.initialize()
    name = Path(_weak(json.loads(bad.read_text()))["image"]).name
    slides = workflow.parser.get_parsed_content("rounds#slides")
    assert name not in [Path(s["image"]).name for s in slides] and len(slides) == 1
    # the bundle's logging.conf sends warnings to stdout
    assert re.search(rf"{re.escape(name)}' has proportions but no tumour patch: skipped", capsys.readouterr().out)
