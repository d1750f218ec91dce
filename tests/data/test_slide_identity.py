"""slide_id: a slide's identity is its file stem, the same in any folder and different between slides."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixsup_monai.data import slide_id, unique_slide_ids


def test_slide_id_is_the_same_in_two_folders_and_differs_between_slides(tmp_path):
    here, there = tmp_path / "clone" / "demo_data", Path("/mnt/elsewhere/cohort")
    assert slide_id(str(here / "slides" / "npl_weak_000.tiff")) == "npl_weak_000"
    assert slide_id({"image": str(here / "slides/npl_weak_000.tiff")}) == slide_id(there / "slides/npl_weak_000.tiff")
    assert slide_id(here / "slides/npl_weak_000.tiff") != slide_id(here / "slides/npl_weak_001.tiff")


def test_unique_slide_ids_refuses_two_files_with_one_name():
    assert unique_slide_ids([{"image": "/a/s1.tiff"}, "/a/s2.svs", "/a/s1.tiff"]) == ["s1", "s2", "s1"]
    with pytest.raises(ValueError, match=r"'/a/s1.tiff' and '/b/s1.svs' share the name 's1'.*rename one"):
        unique_slide_ids(["/a/s1.tiff", "/b/s1.svs"])
