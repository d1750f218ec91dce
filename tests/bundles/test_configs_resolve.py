"""Resolving a bundle config writes nothing; its ``initialize`` makes the demo; inference copies cannot drift."""

from __future__ import annotations

import contextlib
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from monai.bundle import ConfigItem, ConfigParser

import mixsup_monai.demo.ensure as ensure_module
from mixsup_monai.demo import ensure_demo_cohort

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"

#: every combination of config files the docs and tests run, per bundle (the first file loaded first).
COMBINATIONS = {
    "lsr": ["evaluate", "multi_gpu_train", "inter", "intra", "lowres", "paper"],
    "mixsup": ["evaluate", "multi_gpu_train", "image_level", "pixel_level", "no_positive_pseudo", "paper"],
    "npl": [
        "evaluate",
        "multi_gpu_train",
        "fixed_threshold",
        "no_npl",
        "npl_only",
        "paper",
        "pseudo_label",
        "single_negative",
        "supervised",
    ],
}
CASES = [
    (bundle, files)
    for bundle, extra in COMBINATIONS.items()
    for files in (
        ["train.json"],
        ["inference.json"],
        ["inference.json", "slide_inference.json"],
        *(["train.json", f"{name}.json"] for name in extra),
    )
]

#: the steps a run executes (``setup``: the named list of ``initialize`` expressions); everything else is resolved.
RUN_STEPS = ("initialize", "setup", "run", "finalize")


def config_ids(config, prefix: str = "") -> Iterator[str]:
    """Every config ID below ``prefix`` (dict keys and list indices, top-down), without the component keys."""
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        if isinstance(key, str) and key.startswith("_") and key.endswith("_"):  # _target_, _mode_, _disabled_ ...
            continue
        config_id = f"{prefix}#{key}" if prefix else str(key)
        if not prefix and config_id in RUN_STEPS:
            continue
        yield config_id
        yield from config_ids(value, config_id)


def snapshot(folder: Path) -> dict[str, int]:
    """Every file and folder below ``folder`` with its modification time."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(Path(folder).rglob("*"))}


def parser_of(bundle: str, files: list[str], **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / bundle / "configs" / file) for file in files])
    parser.update(overrides)
    parser.parse()
    return parser


@contextlib.contextmanager
def one_process_group(monkeypatch):
    """A 1-process gloo group, as ``torchrun --nproc_per_node=1`` would set up for ``multi_gpu_train.json``."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LOCAL_RANK", "0")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.fixture
def empty_dirs(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """An empty ``bundle_root`` and an empty working directory (MLflow's folder is relative to it)."""
    bundle_root, cwd = tmp_path / "bundle_root", tmp_path / "cwd"
    bundle_root.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return bundle_root, cwd


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # paper.json's 4 workers, never started
@pytest.mark.parametrize("name, files", CASES, ids=["-".join([b, *f]) for b, f in CASES])
def test_resolving_every_config_id_writes_nothing(name, files, empty_dirs, demo_datalist, monkeypatch):
    bundle_root, cwd = empty_dirs
    datalist = demo_datalist(name)
    demo_before = snapshot(datalist.parent)
    overrides = {"bundle_root": str(bundle_root)}
    if files[0] != "inference.json":  # inference reads tiles and slides, not a datalist
        overrides["datalist"] = str(datalist)
    with one_process_group(monkeypatch) if "multi_gpu_train.json" in files else contextlib.nullcontext():
        parser = parser_of(name, files, **overrides)
        ids = list(config_ids(parser.get()))
        for config_id in ids:
            parser.get_parsed_content(config_id)
            assert not snapshot(bundle_root) and not snapshot(cwd), f"resolving {config_id!r} wrote files"
    assert len(ids) > 50  # the walk reached the nested components, not only the top level
    assert snapshot(datalist.parent) == demo_before


def test_initialize_makes_the_demo_cohort_with_the_run_seed(empty_dirs, demo_datalist, monkeypatch):
    """The other side of the test above: ``initialize`` writes the demo (here a copy of the tiny one) and mlruns."""
    bundle_root, cwd = empty_dirs
    calls = []

    def fake_make_demo_cohort(task, out_dir, seed=0):
        calls.append((task, Path(out_dir), seed))
        shutil.copytree(demo_datalist("npl").parent, out_dir)
        return Path(out_dir) / "datalist.json"

    monkeypatch.setattr(ensure_module, "make_demo_cohort", fake_make_demo_cohort)
    parser = parser_of("npl", ["train.json"], bundle_root=str(bundle_root), seed=3)
    assert parser.get_parsed_content("datalist") == f"{bundle_root}/demo_data/datalist.json"
    assert not snapshot(bundle_root) and not snapshot(cwd)
    parser.get_parsed_content("initialize")
    assert calls == [("npl", bundle_root / "demo_data", 3)]
    assert (bundle_root / "demo_data" / "datalist.json").is_file() and (cwd / "mlruns").is_dir()
    assert len(parser.get_parsed_content("train#slides")) > 0


def test_ensure_demo_cohort_refuses_a_missing_user_datalist(tmp_path, monkeypatch):
    monkeypatch.setattr(ensure_module, "make_demo_cohort", lambda *a, **k: pytest.fail("made a demo"))
    missing = tmp_path / "mine" / "datalist.json"
    with pytest.raises(FileNotFoundError) as raised:  # an InputNotFoundError: one line on the command line
        ensure_demo_cohort("lsr", missing, tmp_path / "demo_data", seed=0)
    assert str(raised.value) == (
        f"datalist not found ({missing.resolve()}): this path does not exist; pass an existing datalist JSON with "
        "--datalist (`python -m mixsup_monai check-datalist <file>` checks one), or leave --datalist unset to train "
        f"on the demo cohort ({tmp_path / 'demo_data' / 'datalist.json'})"
    )
    assert not (tmp_path / "demo_data").exists()
    missing.parent.mkdir()
    missing.write_text("{}")
    assert ensure_demo_cohort("lsr", missing, tmp_path / "demo_data") == missing  # a user's datalist: no demo


def test_ensure_demo_cohort_makes_the_demo_of_its_datalist(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ensure_module, "make_demo_cohort", lambda task, out, seed=0: calls.append((task, out, seed)))
    demo = tmp_path / "demo_data"
    # the same file however it is spelt: bundle_root from the command line may be relative or unresolved
    monkeypatch.chdir(tmp_path)
    assert ensure_demo_cohort("mixsup", "demo_data/./datalist.json", demo, seed=2) == Path("demo_data/datalist.json")
    assert calls == [("mixsup", demo, 2)]


#: config IDs of ``train.json`` (or of ``train.json`` + ``evaluate.json``) and ``inference.json`` that must agree:
#: the network inference loads the checkpoint into, and the geometry it was trained with.
SHARED = {
    "lsr": [
        ("network_def", "network_def"),
        ("classes", "classes"),
        ("block_input_size", "block_input_size"),
        ("block_context", "block_context"),
        ("network_mpp", "network_mpp"),
        ("input_mpp", "input_mpp"),
        ("validate#slide_downsample", "slide_downsample"),
        ("validate#inferer", "inferer"),
        ("validate#postprocessing#transforms#0", "postprocessing#transforms#0"),
    ],
    "mixsup": [
        ("network_def", "network_def"),
        ("rounds#stage2#network_def", "stage2_network_def"),
        ("classes", "classes"),
        ("patch_size", "patch_size"),
        ("patch_level", "patch_level"),
        ("network_mpp", "network_mpp"),
        ("input_mpp", "input_mpp"),
        ("top_k", "top_k"),
        *((f"rounds#predictor#{k}", f"predictor#{k}") for k in ("min_tissue_fraction", "activation", "patch_score")),
        ("inferer#heatmap_max_size", "inferer#heatmap_max_size"),
    ],
    "npl": [
        ("network_def", "network_def"),
        ("classes", "classes"),
        ("proportion_classes", "proportion_classes"),
        ("patch_size", "patch_size"),
        ("patch_level", "patch_level"),
        ("network_mpp", "network_mpp"),
        ("input_mpp", "input_mpp"),
        *((f"rounds#predictor#{k}", f"predictor#{k}") for k in ("min_tissue_fraction", "activation", "patch_score")),
        ("inferer#map_max_size", "inferer#map_max_size"),
    ],
}


def plain(value):
    """A value resolved with ``instantiate=False`` as plain data: components as their (resolved) config."""
    if isinstance(value, ConfigItem):
        value = value.get_config()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@pytest.mark.parametrize("name", sorted(SHARED))
def test_inference_network_and_geometry_are_the_trained_ones(name, demo_datalist):
    """``inference.json`` stands alone (MONAI Label, Model Zoo), so it repeats ``network_def``: the copies must agree.

    ``slide_inference.json`` adds the slide pipeline on top of it (the predictor, the stage-2 classifier). MONAI's
    ``%file#id`` macros open the file relative to the working directory, not to the config, so a cross-file macro
    would break when a bundle runs from another folder; hence a copy checked here.
    """
    train = parser_of(name, ["train.json", "evaluate.json"], datalist=str(demo_datalist(name)))
    inference = parser_of(name, ["inference.json", "slide_inference.json"])
    for train_id, inference_id in SHARED[name]:
        expected = plain(train.get_parsed_content(train_id, instantiate=False))
        actual = plain(inference.get_parsed_content(inference_id, instantiate=False))
        assert actual == expected, (train_id, inference_id)


@pytest.mark.parametrize("name", sorted(SHARED))
def test_tile_inference_reads_tiles_at_the_training_resolution(name):
    """A tile is brought to ``network_mpp``: on the demo (level 0 at ``input_mpp``, 2x pyramid) that is the
    resolution the network was trained at -- the slide pipeline's downsample (LSR) or ``patch_level``."""
    inference = parser_of(name, ["inference.json", "slide_inference.json"])
    mpp, input_mpp = inference.get_parsed_content("network_mpp"), inference.get_parsed_content("input_mpp")
    if name == "lsr":
        assert mpp == input_mpp * inference.get_parsed_content("slide_downsample")
    else:
        assert mpp == input_mpp * 2 ** inference.get_parsed_content("patch_level")


def test_labelled_tiles_joining_the_demo_cohort_are_warned_about(tmp_path, caplog):
    """MONAI Label's labelled tiles with the default (demo) datalist: a warning that names the demo and the fix;
    none for a user's datalist or without tiles."""
    from mixsup_monai.demo import warn_if_demo_joins_annotations

    demo = tmp_path / "demo_data"
    tiles = [{"image": "tile.png", "label": "label.png"}]
    with caplog.at_level("WARNING", logger="mixsup_monai.demo.ensure"):
        assert warn_if_demo_joins_annotations(demo / "datalist.json", demo, tiles)
        assert not warn_if_demo_joins_annotations(tmp_path / "cohort.json", demo, tiles)
        assert not warn_if_demo_joins_annotations(demo / "datalist.json", demo, [])
    (record,) = caplog.records
    assert "1 labelled tile(s)" in record.getMessage() and "set 'datalist'" in record.getMessage()
