"""Each bundle's ``network_def`` passes the Model Zoo's ``ckpt_export`` (TorchScript) and ``verify_net_in_out``.

The two ``python -m monai.bundle`` command lines run on a copy of each bundle whose ``models/model.pt`` is a plain
state dict of a seeded random ``network_def``. Importing MONAI is most of a command's time, so the six command lines
run one after the other in ONE subprocess, each as ``python -m`` runs it (``runpy.run_module("monai.bundle")``
with the command's ``sys.argv``, in the bundle folder); the Model Zoo's checker, too, runs both in one interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[2]
BUNDLES = ("lsr", "mixsup", "npl")
COMMANDS = ("ckpt_export", "verify_net_in_out")
SEED = 0
TIMEOUT = 600
#: the line the runner prints before each command's output, and before the exit codes
MARK = "@@ command "
#: ``python -m monai.bundle <args>`` for each ``[folder, args]`` of ``sys.argv[1]`` (JSON); exit codes printed last
RUNNER = f"""
import json, os, runpy, sys, traceback
codes = []
for cwd, args in json.loads(sys.argv[1]):
    os.chdir(cwd)
    print({MARK!r} + str(len(codes)), flush=True)
    sys.argv = ["python -m monai.bundle", *args]
    try:
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
        codes.append(0)
    except SystemExit as e:
        codes.append(e.code if isinstance(e.code, int) else int(e.code is not None))
    except Exception:
        traceback.print_exc()
        codes.append(1)
    sys.stdout.flush()
    sys.stderr.flush()
print({MARK!r} + "codes " + json.dumps(codes), flush=True)
"""


@dataclass
class Export:
    """One bundle's copy, its eager network, and the two commands' results."""

    root: Path
    network: torch.nn.Module
    ckpt_export: subprocess.CompletedProcess
    verify_net_in_out: subprocess.CompletedProcess

    @property
    def metadata(self) -> dict:
        return json.loads((self.root / "configs" / "metadata.json").read_text())


def seeded_network(root: Path, seed: int = SEED) -> torch.nn.Module:
    """``network_def`` of the bundle at ``root`` (``configs/inference.json``), randomly initialised with ``seed``."""
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    parser["device"] = "$torch.device('cpu')"
    torch.manual_seed(seed)
    return parser.get_parsed_content("network_def")


def subprocess_env() -> dict[str, str]:
    """This repository importable (whatever the editable install points at), one thread per command."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def bundle_commands(root: Path) -> dict[str, list[str]]:
    """The Model Zoo's two network checks of ``network_def``, run from the bundle folder."""
    common = ["--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json"]
    common += ["--bundle_root", str(root)]
    bundle = [sys.executable, "-m", "monai.bundle"]
    return {
        "ckpt_export": [*bundle, "ckpt_export", "network_def", "--filepath", str(root / "models" / "model.ts")]
        + ["--ckpt_file", str(root / "models" / "model.pt"), *common],
        "verify_net_in_out": [*bundle, "verify_net_in_out", "network_def", "--device", "cpu", *common],
    }


def run_monai_bundle(commands: list[tuple[Path, list[str]]]) -> list[subprocess.CompletedProcess]:
    """Run ``python -m monai.bundle`` command lines (folder, full argv) in one subprocess; one result each."""
    jobs = json.dumps([[str(cwd), argv[3:]] for cwd, argv in commands])
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, jobs],
        env={**subprocess_env(), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
    )
    *outputs, last = done.stdout.split(MARK)[1:]
    if done.returncode != 0 or not last.startswith("codes "):
        raise RuntimeError(f"the command runner failed ({done.returncode}):\n{done.stdout[-4000:]}")
    codes = json.loads(last.split("\n", 1)[0][len("codes ") :])
    return [
        subprocess.CompletedProcess(argv, code, output.split("\n", 1)[1], "")
        for (_, argv), code, output in zip(commands, codes, outputs)
    ]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Export]:
    """Every bundle copied with a random-init ``models/model.pt``, then both commands run on every copy."""
    networks, commands, keys = {}, [], []
    for bundle in BUNDLES:
        root = tmp_path_factory.mktemp("ckpt") / bundle
        shutil.copytree(REPO / "bundles" / bundle / "configs", root / "configs")
        shutil.copy2(REPO / "bundles" / bundle / "LICENSE", root / "LICENSE")
        (root / "models").mkdir()
        networks[bundle] = (root, seeded_network(root).eval())
        torch.save(networks[bundle][1].state_dict(), root / "models" / "model.pt")
        for name in COMMANDS:
            commands.append((root, bundle_commands(root)[name]))
            keys.append((bundle, name))
    results = dict(zip(keys, run_monai_bundle(commands)))
    return {
        bundle: Export(root, network, *(results[bundle, name] for name in COMMANDS))
        for bundle, (root, network) in networks.items()
    }


def _input_shape(metadata: dict) -> tuple[int, ...]:
    image = metadata["network_data_format"]["inputs"]["image"]
    return (2, int(image["num_channels"]), *(int(size) for size in image["spatial_shape"]))


def _failed(result: subprocess.CompletedProcess) -> str:
    return f"{' '.join(result.args)} exited {result.returncode}:\n{result.stdout[-4000:]}"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_torchscript_export_matches_the_eager_network(exports, bundle):
    from monai.data import load_net_with_metadata

    export = exports[bundle]
    assert export.ckpt_export.returncode == 0, _failed(export.ckpt_export)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; the Model Zoo still checks it
        scripted, meta, extra = load_net_with_metadata(
            str(export.root / "models" / "model.ts"),
            map_location=torch.device("cpu"),
            more_extra_files=["inference.json"],
        )
    assert meta["version"] == export.metadata["version"], "the TorchScript file carries the bundle's metadata"
    assert "network_def" in json.loads(extra["inference.json"])
    torch.manual_seed(SEED)
    image = torch.rand(_input_shape(export.metadata))
    with torch.no_grad():
        expected, got = export.network(image), scripted.eval()(image)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5), f"max difference {(got - expected).abs().max().item():.3g}"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_network_matches_the_metadata_shapes(exports, bundle):
    export = exports[bundle]
    assert export.verify_net_in_out.returncode == 0, _failed(export.verify_net_in_out)
    assert "data shape of network is verified with no error" in export.verify_net_in_out.stdout
