"""The command line on bad input: one ``error: <what> (<where>): <fix>`` line, exit 1, no traceback; clean JSON."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mixsup_monai.utils.errors import DEBUG_ENV, InputError, InputNotFoundError
from mixsup_monai.wsi.plain_image import PlainImage
from mixsup_monai.wsi.reader import open_slide

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SMALL_SVS = SHARED / "wsi" / "CMU-1-Small-Region.svs"
NEEDS_SHARED = pytest.mark.skipif(
    not SMALL_SVS.exists(), reason=f"shared test slide {SMALL_SVS} not found (only on the project machines)"
)
CONVERT = "`vips tiffsave {name} {stem}.tif --tile --pyramid --compression jpeg`"


def run_cli(cwd: Path, *args: str, debug_env: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    if debug_env is not None:
        env[DEBUG_ENV] = debug_env
    return subprocess.run(
        [sys.executable, "-m", "mixsup_monai", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def assert_one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr == expected + "\n"


@pytest.fixture
def cwd(tmp_path) -> Path:
    return tmp_path.resolve()


def test_missing_slide(cwd):
    expected = (
        f"error: slide not found ({cwd / 'nope.svs'}): this path does not exist; check its spelling and the "
        "current folder"
    )
    assert_one_line_error(run_cli(cwd, "slide-info", "nope.svs"), expected)


def test_folder_given_as_slide(cwd):
    (cwd / "slides").mkdir()
    expected = (
        f"error: slide is a folder ({cwd / 'slides'}): expected a slide file (.svs, .tif, .ndpi, .mrxs, ...); "
        "for a DICOM WSI give one of its .dcm files"
    )
    assert_one_line_error(run_cli(cwd, "slide-info", "slides"), expected)


def test_plain_jpeg_is_read_whole_and_a_large_one_refused(cwd):
    # a small plain image is a one-level slide (tile inference, the tissue command) ...
    Image.fromarray(np.full((32, 48, 3), 200, np.uint8)).save(cwd / "photo.jpg")
    done = run_cli(cwd, "tissue", "photo.jpg", "--patch-size", "16")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["backend"] == "pil" and report["tissue_fraction"] == 0.0 and report["patch_count"] == 0
    # ... a large one needs a pyramid: refused with the command that makes one
    Image.fromarray(np.full((8200, 8200, 3), 200, np.uint8)).save(cwd / "scan.jpg", quality=50)
    expected = (
        f"error: plain JPEG image of 8200 x 8200 px is too large to read whole (above 67108864 px) "
        f"({cwd / 'scan.jpg'}): convert it to a tiled pyramid, e.g. "
        f"{CONVERT.format(name='scan.jpg', stem='scan')}, or write one with mixsup_monai.wsi.write_pyramidal_tiff"
    )
    assert_one_line_error(run_cli(cwd, "tissue", "scan.jpg"), expected)


def test_invalid_json_datalist(cwd):
    (cwd / "dl.json").write_text('{"task": "mixsup",\n  "classes": ["a" "b"]}\n')
    expected = f"error: datalist is not valid JSON ({cwd / 'dl.json'}): Expecting ',' delimiter at line 2, column 19"
    assert_one_line_error(run_cli(cwd, "check-datalist", "dl.json"), expected)


def test_missing_datalist(cwd):
    expected = (
        f"error: datalist not found ({cwd / 'none.json'}): this path does not exist; expected a JSON file "
        "(see README: datalist)"
    )
    assert_one_line_error(run_cli(cwd, "lsr-stats", "none.json", "out.json"), expected)
    assert not (cwd / "out.json").exists()


def test_datalist_failing_the_checker_lists_every_problem_then_one_line(cwd):
    datalist = {"task": "mixsup", "classes": ["normal", "tumour"], "training": [{"image": "gone.tif", "label": 3}]}
    (cwd / "dl.json").write_text(json.dumps(datalist))
    result = run_cli(cwd, "check-datalist", "dl.json", "--no_open")
    expected = f"error: datalist has 2 problem(s) ({cwd / 'dl.json'}): fix the ones listed above (see README: datalist)"
    assert_one_line_error(result, expected)
    report = result.stdout.splitlines()
    assert report[0] == "dl.json: 2 problem(s)"
    assert any("key 'image': file does not exist" in line for line in report[1:])
    assert any("slide label 3 out of range" in line for line in report[1:])


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(cwd, how):
    args = ("slide-info", "nope.svs", "--debug") if how == "flag" else ("slide-info", "nope.svs")
    result = run_cli(cwd, *args, debug_env="1" if how == "env" else None)
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert f"InputNotFoundError: slide not found ({cwd / 'nope.svs'})" in result.stderr


@NEEDS_SHARED
@pytest.mark.parametrize("command", ["slide-info", "tissue"])
def test_json_output_is_alone_on_stdout(cwd, command):
    """cuCIM's cuFile start-up noise (``dlopen error libcuda.so.1 ...`` without a GPU) must not reach stdout."""
    result = run_cli(cwd, command, str(SMALL_SVS))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["backend"] == "cucim"
    if command == "slide-info":
        assert out["level_dimensions"] == [[2220, 2967]]
    else:
        assert out["patch_count"] > 0


def test_input_error_line_and_compatibility(tmp_path):
    error = InputError("what\nis wrong", tmp_path / "x.json", "the fix")
    assert str(error) == f"what; is wrong ({tmp_path / 'x.json'}): the fix"
    assert isinstance(error, ValueError)
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    missing = InputNotFoundError("slide not found", "a.svs", "check it")
    assert isinstance(missing, FileNotFoundError) and isinstance(missing, ValueError)
    assert missing.filename == "a.svs"


def test_open_slide_raises_input_errors_in_process(tmp_path):
    (tmp_path / "loop.svs").symlink_to(tmp_path / "loop.svs")
    with pytest.raises(FileNotFoundError, match=r"slide is a broken or looping symbolic link \(.*loop\.svs\)"):
        open_slide(tmp_path / "loop.svs")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "tile.png")
    with pytest.raises(InputError, match=r"plain PNG image of 8 x 8 px is too large .*\(.*tile\.png\): convert it"):
        PlainImage(tmp_path / "tile.png", max_pixels=63)
    with pytest.raises(InputError, match=r"slide is a folder"):
        open_slide(tmp_path)


@NEEDS_SHARED
def test_first_cucim_open_restores_stdout(capfd):
    with open_slide(SMALL_SVS) as slide:
        assert slide.info.backend == "cucim"
    print("after")
    out, _ = capfd.readouterr()
    assert "dlopen" not in out and "cuFile" not in out
    assert out.endswith("after\n")
