"""Fixtures for the WSI tests: small generated pyramidal slides and the shared real-slide folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mixsup_monai.wsi import write_pyramidal_tiff

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_file():
    """``shared_file("wsi/x.svs")``: a file of ``../shared/data`` (relative to the repo root), or skip the test."""

    def get(relative: str) -> Path:
        path = SHARED / relative
        if not path.exists():
            pytest.skip(f"shared test data {relative!r} not found under {SHARED} (only on the project machines)")
        return path

    return get


def he_image(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A caricature H&E slide: glass with noise, one pink tissue ellipse with purple nuclei, a green pen stroke.

    Returns:
        ``(rgb (H, W, 3) uint8, tissue truth (H, W) bool, pen truth (H, W) bool)``.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.empty((height, width, 3), np.float32)
    rgb[:] = (238, 236, 240)
    rgb += rng.normal(0, 2, rgb.shape)
    tissue = ((xx - 0.35 * width) / (0.22 * width)) ** 2 + ((yy - 0.5 * height) / (0.35 * height)) ** 2 < 1
    stroma = np.array((226, 140, 190), np.float32) + rng.normal(0, 8, (height, width, 3))
    rgb[tissue] = stroma[tissue]
    nuclei = tissue & (rng.random((height, width)) < 0.02)
    rgb[nuclei] = (95, 50, 140)
    pen = (np.abs(xx - 0.8 * width) < 0.03 * width) & (yy > 0.2 * height) & (yy < 0.8 * height)
    rgb[pen] = (40, 150, 120)
    return np.clip(rgb, 0, 255).astype(np.uint8), tissue, pen


@pytest.fixture(scope="session")
def he_slide(tmp_path_factory) -> dict:
    """A 2048 x 1536 pyramidal JPEG TIFF at 0.5 um/px (levels 2048, 1024, 512, 256 px wide)."""
    rgb, tissue, pen = he_image(1536, 2048)
    path = tmp_path_factory.mktemp("slides") / "he.tif"
    write_pyramidal_tiff(path, rgb, mpp=0.5, tile_size=256)
    return {"path": path, "rgb": rgb, "tissue": tissue, "pen": pen, "mpp": 0.5}


@pytest.fixture(scope="session")
def blank_slide(tmp_path_factory) -> Path:
    """A 1024 x 1024 slide of empty glass."""
    rng = np.random.default_rng(1)
    rgb = np.clip(rng.normal(238, 2, (1024, 1024, 3)), 0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("slides") / "blank.tif"
    write_pyramidal_tiff(path, rgb, mpp=0.5, tile_size=256)
    return path


@pytest.fixture(scope="session")
def gradient_slide(tmp_path_factory) -> dict:
    """A 2048 x 1536 smooth-gradient pyramid (R = x / 8, G = y / 6): JPEG-exact enough to check coordinates."""
    yy, xx = np.mgrid[0:1536, 0:2048]
    rgb = np.stack([xx // 8, yy // 6, (xx + yy) // 16], axis=-1).astype(np.uint8)
    path = tmp_path_factory.mktemp("slides") / "gradient.tif"
    write_pyramidal_tiff(path, rgb, mpp=0.5, tile_size=256)
    return {"path": path, "rgb": rgb}
