"""The NPL bundle end to end through monai.bundle: train (rounds) -> evaluate -> inference, tiny settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from mixsup_monai.data import DatalistError
from mixsup_monai.demo import make_demo_cohort
from mixsup_monai.utils import run_bundle, run_dirs

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "npl"
CONFIGS = BUNDLE / "configs"

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


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("npl_bundle")
    datalist = make_demo_cohort("npl", root / "data", seed=0, n_slides=5, progress=False)
    return root, Path(datalist)


def overrides(root: Path, datalist: Path, **extra) -> dict:
    return {**run_dirs(BUNDLE, root, datalist=datalist), **TINY, **extra}


def absolute_datalist(datalist: Path, path: Path, edit) -> Path:
    """A copy of ``datalist`` with absolute paths, changed by ``edit(data)``, written to ``path``."""
    data = json.loads(datalist.read_text())
    for section in ("training", "validation", "test"):
        for slide in data.get(section, []):
            for key in ("image", "mask", "tumour_mask", "truth_mask"):
                if key in slide:
                    slide[key] = str(datalist.parent / slide[key])
    edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("name", OVERRIDE_FILES)
def test_every_config_parses_with_train(name, workspace):
    """Every override file combines with train.json (inference.json stands alone) and resolves its runner."""
    root, datalist = workspace
    files = [str(CONFIGS / "inference.json")] if name == "inference.json" else [str(CONFIGS / "train.json")]
    if name not in ("train.json", "inference.json"):
        files.append(str(CONFIGS / name))
    workflow = ConfigWorkflow(config_file=files, workflow_type="infer" if name == "inference.json" else "train")
    workflow.parser.update({k: v for k, v in overrides(root, datalist).items() if k not in TINY})
    if name == "inference.json":
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


def test_train_evaluate_inference(workspace):
    root, datalist = workspace
    train = run_bundle(BUNDLE, ["train.json"], "train", **overrides(root, datalist))
    runner = train.parser.get_parsed_content("rounds#runner")
    assert [r["round"] for r in runner.records] == [0, 1]
    labels = runner.records[1]["pseudo_labels"]
    assert labels["pseudo/slides"] >= 1 and labels["pseudo/patches"] > 0
    assert labels["sizes"]["positive"] + labels["sizes"]["negative"] > 0
    exported = torch.load(root / "models" / "model.pt", weights_only=False)
    assert {"model", "round"} <= set(exported) and exported["selection_metric"] == "val_loss"
    table = (root / "eval" / "rounds.md").read_text()
    assert "val_loss" in table and table.count("**yes**") == 1
    header = (root / "eval" / "rounds.csv").read_text().splitlines()[0].split(",")
    assert {"pseudo/sae_mean", "weak/sae_mean", "pseudo/negative_accumulated", "val_miou"} <= set(header)

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("npl").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["adaptive"] == "True"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_loss")) == [0, 1]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "pseudo/sae_mean")] == [1]
    assert len(client.get_metric_history(run.info.run_id, "weak/sae_mean")) == 2  # SAE after each round

    run_bundle(BUNDLE, ["train.json", "evaluate.json"], "eval", **overrides(root, datalist))
    metrics = json.loads((root / "eval" / "test" / "test_metrics.json").read_text())
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("op", "pc", "miou", "sae_mean"))
    assert sum(metrics["counts"]["tp"]) + sum(metrics["counts"]["fp"]) == sum(
        r["scored_patches"] for r in metrics["per_slide"]
    )
    assert (root / "eval" / "test" / "test_per_slide.csv").is_file()

    data = json.loads(datalist.read_text())
    slides = [str(datalist.parent / s["image"]) for s in data["test"]]
    run_bundle(
        BUNDLE,
        ["inference.json"],
        "infer",
        bundle_root=str(BUNDLE),
        ckpt_path=str(root / "models" / "model.pt"),
        output_dir=str(root / "inference"),
        input_slides=slides,
        **{k: v for k, v in TINY.items() if k in ("patch_size", "patch_level", "network_def#width_mult")},
    )
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


def test_resume_after_a_stop_continues_with_the_next_round(workspace, tmp_path, capsys):
    """A run stopped after round 0, run again with one more round: round 0 is loaded, not recomputed."""
    root, datalist = workspace
    run_bundle(BUNDLE, ["train.json"], "train", **overrides(tmp_path, datalist, max_rounds=0))
    checkpoint = tmp_path / "models" / "rounds" / "round_00.pt"
    mtime = checkpoint.stat().st_mtime_ns
    capsys.readouterr()
    run_bundle(BUNDLE, ["train.json"], "train", **overrides(tmp_path, datalist, max_rounds=1))
    assert "resuming after round 0" in capsys.readouterr().out
    assert checkpoint.stat().st_mtime_ns == mtime
    state = json.loads((tmp_path / "models" / "rounds.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [0, 1] and (
        tmp_path / "models" / "rounds" / "round_01.pt"
    ).is_file()
    with pytest.raises(RuntimeError) as info:  # resuming with other settings would mix two runs
        run_bundle(BUNDLE, ["train.json", "no_npl.json"], "train", **overrides(tmp_path, datalist, max_rounds=2))
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
def test_bad_proportions_are_refused_naming_file_slide_and_key(name, edit, match, workspace, tmp_path):
    root, datalist = workspace
    bad = absolute_datalist(datalist, tmp_path / "bad_datalist.json", edit)
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
    assert re.search(r"bad_datalist\.json: " + match, str(cause)), str(cause)
    assert "npl_weak_" in str(cause)  # the slide is named


def test_weak_slide_without_tumour_patch_is_skipped_by_name(workspace, tmp_path, capsys):
    """A slide with proportions whose tumour outline is empty: NPL's E-step skips it with a warning naming it."""
    root, datalist = workspace
    from PIL import Image

    def edit(data):
        weak = _weak(data)
        with Image.open(weak["tumour_mask"]) as img:
            empty = Image.new("L", img.size, 0)
        empty.save(tmp_path / "empty_tumour.png")
        weak["tumour_mask"] = str(tmp_path / "empty_tumour.png")

    bad = absolute_datalist(datalist, tmp_path / "datalist.json", edit)
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), workflow_type="train", **overrides(tmp_path, bad)
    )
    workflow.initialize()
    name = Path(_weak(json.loads(bad.read_text()))["image"]).name
    slides = workflow.parser.get_parsed_content("rounds#slides")
    assert name not in [Path(s["image"]).name for s in slides] and len(slides) == 1
    # the bundle's logging.conf sends warnings to stdout
    assert re.search(rf"{re.escape(name)}' has proportions but no tumour patch: skipped", capsys.readouterr().out)
