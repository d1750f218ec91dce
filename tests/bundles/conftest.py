"""Fixtures of the bundle tests: one tiny demo cohort per task, and a bundle runner with the tests' tiny settings."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"

#: a real H&E tile of ../shared/data (read-only material beside the repo; tests that need it skip without it)
SHARED_TILES = Path(__file__).resolve().parents[3] / "shared" / "data" / "tiles"
SHARED_TILE = SHARED_TILES / "tissue-level0-4302-10273-4814-10785.png"

#: datalist keys holding slide-relative file paths.
PATH_KEYS = ("image", "mask", "tissue_mask", "tumour_mask", "truth_mask")


@dataclass(frozen=True)
class Bundle:
    """A bundle under test: runs its configs (through ``monai.bundle``) on the tiny demo with tiny settings.

    Args:
        name: the bundle's folder in ``bundles/``.
        datalist: the tiny demo cohort's datalist.
        tiny: overrides of every training run (few epochs, small networks).
    """

    name: str
    datalist: Path
    tiny: Mapping[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return BUNDLES / self.name

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    def overrides(self, work: Path, datalist: Path | None = None, **extra) -> dict[str, Any]:
        """One run's overrides: its folders under ``work`` (``utils.run_dirs``), the datalist, ``tiny``, ``extra``."""
        from mixsup_monai.utils import run_dirs

        return {**run_dirs(self.root, work, datalist=datalist or self.datalist), **self.tiny, **extra}

    def run(self, config_files: Sequence[str], workflow_type: str, work: Path, **extra):
        """Run ``config_files`` through ``utils.run_bundle`` (as the benchmarks do); returns the workflow."""
        from mixsup_monai.utils import run_bundle

        return run_bundle(self.root, config_files, workflow_type, **self.overrides(work, **extra))

    def command(self, config_files: Sequence[str], overrides: Mapping[str, Any]) -> list[str]:
        """The user's command line, ``python -m monai.bundle run --config_file ... --key value ...``.

        ``bundle_root`` is left out: the configs derive it from ``--config_file`` (``utils.bundle_root_from_argv``).
        """
        files = [str(self.configs / name) for name in config_files]
        config_file = files[0] if len(files) == 1 else str(files)
        args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_file]
        for key, value in overrides.items():
            if key != "bundle_root":
                args += [f"--{key}", str(value)]
        return args

    def held_out_slides(self, count: int | None = None) -> list[str]:
        """Paths of the demo's test slides (the first ``count``)."""
        data = json.loads(self.datalist.read_text())
        return [str(self.datalist.parent / s["image"]) for s in data["test"][:count]]

    def infer(self, work: Path, slides: Sequence[str], **extra):
        """The slide pipeline (``inference.json`` + ``slide_inference.json``) with ``work``'s trained files; outputs in
        ``work/inference``."""
        from mixsup_monai.utils import run_bundle

        return run_bundle(
            self.root,
            ["inference.json", "slide_inference.json"],
            "infer",
            bundle_root=str(self.root),
            ckpt_path=str(work / "models" / "model.pt"),
            output_dir=str(work / "inference"),
            input_slides=list(slides),
            **extra,
        )

    def infer_tiles(self, work: Path, tiles: Sequence[str | dict], **extra) -> list[Path]:
        """``inference.json`` alone (as MONAI Label and the Model Zoo load it) on ``tiles`` (paths, or dicts with
        ``image`` / ``location`` / ``size``) with ``work``'s trained network; returns the label PNGs it wrote in
        ``work/tiles``, in order."""
        from mixsup_monai.utils import run_bundle

        run_bundle(
            self.root,
            ["inference.json"],
            "infer",
            bundle_root=str(self.root),
            ckpt_path=str(work / "models" / "model.pt"),
            output_dir=str(work / "tiles"),
            input_tiles=list(tiles),
            **extra,
        )
        return sorted((work / "tiles").glob("*_label.png"))

    def check_tile_labels(self, work: Path, slide: str, values: set[int], **extra) -> None:
        """Tile inference on a box of ``slide`` and on a real PNG tile (when ../shared/data is there): one label PNG
        each, of the input's size, with values in ``values``, and the box's GeoJSON inside the box (level 0)."""
        import numpy as np
        from PIL import Image

        location, size = [16, 24], [200, 150]
        tiles: list = [{"image": slide, "location": location, "size": size}]
        if SHARED_TILE.is_file():
            tiles.append(str(SHARED_TILE))
        labels = {p.name: p for p in self.infer_tiles(work, tiles, **extra)}
        expected = {f"{Path(slide).stem}_x16_y24_label.png": tuple(size)}
        if SHARED_TILE.is_file():
            with Image.open(SHARED_TILE) as tile:
                expected[f"{SHARED_TILE.stem}_label.png"] = tile.size
        assert set(labels) == set(expected)
        for name, tile_size in expected.items():
            with Image.open(labels[name]) as label:
                assert label.size == tile_size and set(np.unique(np.asarray(label)).tolist()) <= values
        geojson = json.loads((work / "tiles" / f"{Path(slide).stem}_x16_y24.geojson").read_text())
        points = [p for f in geojson["features"] for ring in f["geometry"]["coordinates"] for p in ring]
        assert all(16 <= x <= 216 and 24 <= y <= 174 for x, y in points)

    def edited_datalist(self, path: Path, edit: Callable[[dict], Any]) -> Path:
        """A copy of the demo's datalist at ``path``, with absolute slide paths, changed by ``edit(data)``."""
        data = json.loads(self.datalist.read_text())
        for section in ("training", "validation", "test"):
            for slide in data.get(section, []):
                for key in PATH_KEYS:
                    if key in slide:
                        slide[key] = str(self.datalist.parent / slide[key])
        edit(data)
        path.write_text(json.dumps(data))
        return path

    def datalist_error(self, datalist: Path, work: Path) -> Exception:
        """The ``DatalistError`` a training run on ``datalist`` stops with (MONAI wraps it in a ``RuntimeError``)."""
        from monai.bundle import ConfigWorkflow

        from mixsup_monai.data import DatalistError

        workflow = ConfigWorkflow(
            config_file=str(self.configs / "train.json"), workflow_type="train", **self.overrides(work, datalist)
        )
        workflow.initialize()
        with pytest.raises(RuntimeError) as info:
            workflow.run()
        cause = info.value
        while cause is not None and not isinstance(cause, DatalistError):
            cause = cause.__cause__
        assert cause is not None, info.value
        return cause

    @staticmethod
    def mlflow_run(work: Path, experiment: str):
        """``(client, run)``: the only MLflow run of ``experiment`` in ``work/mlruns``."""
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
        (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        return client, run


@pytest.fixture(scope="module")
def bundle(request, demo_datalist) -> Bundle:
    """The bundle of the test module: its ``BUNDLE`` (name) with its ``TINY`` overrides, on the tiny demo."""
    name = request.module.BUNDLE
    return Bundle(name, demo_datalist(name), dict(getattr(request.module, "TINY", {})))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, bundle) -> Path:
    """The work folder of the module's main run, reused by its train -> evaluate -> inference steps."""
    return tmp_path_factory.mktemp(f"{bundle.name}_bundle")
