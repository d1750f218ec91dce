"""A MONAI Label server started by ``scripts/monailabel_app.sh`` serves the bundles over HTTP (127.0.0.1 only)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image

pytestmark = pytest.mark.label

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "monailabel_app.sh"
BUNDLE_NAMES = ("lsr", "mixsup", "npl")
SLIDE_ID = "CMU-1-Small-Region"
#: a tissue region of CMU-1-Small-Region.svs (2220 x 2967 at level 0), split by the server into 2 x 2 tiles
REGION = {"level": 0, "location": [1000, 1200], "size": [512, 512], "tile_size": [256, 256], "min_poly_area": 40}
STARTUP_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 300.0
TRAIN_TIMEOUT_S = 600.0
#: urllib without proxies: every request goes to the loopback server
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Server:
    """A running MONAI Label server: its base URL, log file and start-up time."""

    url: str
    log: Path
    startup_s: float
    work: Path

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
        """``(HTTP status, body)`` of one request (JSON body when given), bounded by ``REQUEST_TIMEOUT_S``."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with _OPENER.open(request, timeout=REQUEST_TIMEOUT_S) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def upload(self, path: str, field: str, file: Path) -> tuple[int, bytes]:
        """``(HTTP status, body)`` of a ``PUT`` of ``file`` as the multipart form field ``field``."""
        boundary = "mixsup-monai-test-boundary"
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{file.name}"\r\n'
        head += "Content-Type: application/octet-stream\r\n\r\n"
        data = head.encode() + file.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        request = urllib.request.Request(self.url + path, data=data, method="PUT", headers=headers)
        try:
            with _OPENER.open(request, timeout=REQUEST_TIMEOUT_S) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log (for failure messages)."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(server: Server, process: subprocess.Popen, timeout_s: float) -> None:
    """Poll ``GET /info/`` once a second until it answers 200; fail when the server exits or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            with _OPENER.open(server.url + "/info/", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1.0)
    pytest.fail(f"no /info/ within {timeout_s:.0f} s:\n{server.log_tail()}")


def _stop(process: subprocess.Popen) -> None:
    """End the server (its own process group, started by the fixture): SIGTERM, then SIGKILL after 30 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _studies(folder: Path, shared_data: Path, tiles: dict[str, Path]) -> Path:
    """A writable studies folder (MONAI Label writes its datastore there) linking the real slide and the tiles."""
    folder.mkdir()
    (folder / f"{SLIDE_ID}.svs").symlink_to(shared_data / "wsi" / f"{SLIDE_ID}.svs")
    for tile in tiles.values():
        (folder / tile.name).symlink_to(tile)
    return folder


@pytest.fixture(scope="module")
def server(
    label_server_stack: ModuleType,
    shared_data: Path,
    tiles: dict[str, Path],
    trainable_bundles: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """The server of ``scripts/monailabel_app.sh`` on a free loopback port, on the trained copies; always stopped."""
    root = tmp_path_factory.mktemp("monailabel")
    studies = _studies(root / "studies", shared_data, tiles)
    models_dir = next(iter(trainable_bundles.values())).parent
    port = _free_port()
    command = ["bash", str(SCRIPT), "--studies", str(studies), "--models-dir", str(models_dir)]
    command += ["--work-dir", str(root / "work"), "--port", str(port), "--python", sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = root / "server.log"
    start = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        pending = Server(f"http://127.0.0.1:{port}", log, 0.0, root / "work")
        _wait_until_up(pending, process, STARTUP_TIMEOUT_S)
        yield Server(pending.url, log, time.monotonic() - start, root / "work")
    finally:
        _stop(process)


def test_info_lists_the_bundles(server: Server) -> None:
    """``/info/`` lists each bundle as an inferer (start-up time in the report: ``-rP``)."""
    status, body = server.request("GET", "/info/")
    assert status == 200
    models = json.loads(body)["models"]
    assert set(BUNDLE_NAMES) <= set(models), f"models {sorted(models)}:\n{server.log_tail()}"
    print(f"server up in {server.startup_s:.1f} s; models {sorted(models)}")


@pytest.mark.parametrize("shape", ["square", "non_square"])
@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_infer_a_tile(server: Server, name: str, shape: str, tiles: dict[str, Path]) -> None:
    """``POST /infer/<bundle>?image=<tile id>`` answers 200 with a label image of the tile's size."""
    tile = tiles[shape]
    status, body = server.request("POST", f"/infer/{name}?image={tile.stem}&output=image")
    assert status == 200, f"{name}: HTTP {status} {body[:300]!r}\n{server.log_tail()}"
    with Image.open(tile) as image, Image.open(io.BytesIO(body)) as label:
        assert label.size == image.size


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_infer_a_slide_region(server: Server, name: str) -> None:
    """``POST /infer/wsi/<bundle>`` on a region of the real slide answers 200 with one annotation per tile."""
    body = {**REGION, "params": {"multi_gpu": False}}
    status, answer = server.request("POST", f"/infer/wsi/{name}?image={SLIDE_ID}&output=json", body)
    assert status == 200, f"{name}: HTTP {status} {answer[:300]!r}\n{server.log_tail()}"
    tiles = json.loads(answer)["annotations"]
    assert len(tiles) == 4
    assert all("annotation" in t for t in tiles), f"{name}: tile results without 'annotation': {tiles[0]}"


def test_infer_a_slide_region_as_dsa(server: Server) -> None:
    """The DSA output of ``/infer/wsi`` (the format DSA reads; QuPath asks for ASAP, same path) answers 200."""
    body = {**REGION, "params": {"multi_gpu": False}}
    status, answer = server.request("POST", f"/infer/wsi/lsr?image={SLIDE_ID}&output=dsa", body)
    assert status == 200, f"HTTP {status} {answer[:300]!r}\n{server.log_tail()}"
    assert "elements" in json.loads(answer)


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_infer_a_slide_region_as_qupath_asks(server: Server, name: str) -> None:
    """The request of MONAI Label's QuPath extension (0.8.x ``MonaiLabelClient.infer``): ``output=asap``, ``params``
    without ``multi_gpu`` -- on a CPU-only server this needs the bundle's ``displayable_configs`` to default
    ``multi_gpu`` to false, else MONAI Label divides by its zero GPUs."""
    params = {"foreground": [], "background": [], "max_workers": 1}
    body = {**REGION, "min_poly_area": 30, "params": params}
    status, answer = server.request("POST", f"/infer/wsi/{name}?output=asap&image={SLIDE_ID}", body)
    assert status == 200, f"{name}: HTTP {status} {answer[:300]!r}\n{server.log_tail()}"
    assert answer.lstrip().startswith(b"<?xml") and b"ASAP_Annotations" in answer


def _label_map(tile: Path, folder: Path) -> Path:
    """An annotator's label of ``tile`` (PNG, the tile's size) in ``channel_def`` values, as MONAI Label stores a
    submitted label: three vertical stripes -- class 1, class 0, unlabelled (255) -- valid for every bundle."""
    import numpy as np

    with Image.open(tile) as image:
        width, height = image.size
    label = np.full((height, width), 255, np.uint8)
    label[:, : width // 3] = 1
    label[:, width // 3 : 2 * width // 3] = 0
    path = folder / f"{tile.stem}.png"
    Image.fromarray(label).save(path)
    return path


def _joined(server: Server) -> list[int]:
    """Items made of labelled tiles, per dataset that logged joining them (the training process logs to the server)."""
    log = server.log.read_text("utf-8", "replace")
    return [int(n) for n in re.findall(r"(\d+) items of 1 labelled tile\(s\) join", log)]


def _wait_for_training(server: Server) -> dict:
    """Poll ``GET /train/`` until the last training task ends; returns it (``status`` DONE / ERROR, ``details``)."""
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        status, body = server.request("GET", "/train/")
        task = json.loads(body) if status == 200 else {}
        if task.get("status") not in ("SUBMITTED", "RUNNING", None):
            return task
        time.sleep(2.0)
    pytest.fail(f"training did not end within {TRAIN_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


@pytest.fixture(scope="module")
def labelled_tiles(server: Server, tiles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Both tiles labelled through ``PUT /datastore/label`` (the datastore's ``final`` labels); their image ids."""
    folder = tmp_path_factory.mktemp("labels")
    ids = []
    for tile in tiles.values():
        label = _label_map(tile, folder)
        status, body = server.upload(f"/datastore/label?image={tile.stem}&tag=final", "label", label)
        assert status == 200, f"HTTP {status} {body[:300]!r}\n{server.log_tail()}"
        ids.append(tile.stem)
    return ids


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_train_from_labelled_tiles(server: Server, name: str, labelled_tiles: list[str]) -> None:
    """``POST /train/<bundle>`` (MONAI Label's ``BundleTrainTask``, in its own process) trains one epoch on the
    datastore's labelled tiles joined with the bundle's datalist, and writes a new ``models/model.pt``."""
    model = server.work / "monaibundle" / "model" / name / "models" / "model.pt"
    before, joined_before = model.read_bytes(), _joined(server)
    params = {"max_epochs": 1, "val_split": 0.5, "device": "cpu", "pretrained": True}
    status, body = server.request("POST", f"/train/{name}", params)
    assert status == 200, f"{name}: HTTP {status} {body[:300]!r}\n{server.log_tail()}"
    task = _wait_for_training(server)
    details = "\n".join(task.get("details", []))
    assert task["status"] == "DONE", f"{name}: training {task['status']}:\n{details}\n{server.log_tail()}"
    assert model.read_bytes() != before, f"{name}: models/model.pt was not rewritten by training"
    joined = _joined(server)[len(joined_before) :]
    # one labelled tile trains, the other is held out (val_split 0.5): each joins its section's datalist items
    assert len(joined) == 2 and all(count > 0 for count in joined), f"{name}: tile items joined {joined}"
    assert (server.work / "mlruns").is_dir(), "training's MLflow store is not in the server's work dir"
