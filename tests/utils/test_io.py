"""Atomic writes: nothing partial is ever left behind, and identical content gives identical bytes."""

from __future__ import annotations

import json

import pytest
import torch

from mixsup_monai.utils.io import torch_save_atomic, write_json_atomic


def test_identical_checkpoints_are_byte_identical(tmp_path):
    state = {"model": torch.nn.Linear(3, 2).state_dict(), "round": 1}
    a = torch_save_atomic(state, tmp_path / "a" / "round_01.pt")
    b = torch_save_atomic(state, tmp_path / "b" / "other_name.pt")
    assert a.read_bytes() == b.read_bytes()  # the temporary file name is not stored in the archive
    loaded = torch.load(a, weights_only=True)
    assert torch.equal(loaded["model"]["weight"], state["model"]["weight"]) and loaded["round"] == 1


def test_json_round_trips_numpy_and_tensors(tmp_path):
    import numpy as np

    path = write_json_atomic(tmp_path / "x.json", {"a": np.float32(0.5), "b": torch.tensor([1, 2]), "c": tmp_path})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [1, 2], "c": str(tmp_path)}


@pytest.mark.parametrize("writer", ["json", "torch"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, writer):
    path = tmp_path / "state"
    path.write_text("old")

    class Unserialisable:
        def __reduce__(self):
            raise OSError("disk full")

    with pytest.raises((TypeError, OSError)):
        if writer == "json":
            write_json_atomic(path, {"x": object()})
        else:
            torch_save_atomic({"x": Unserialisable()}, path)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


@pytest.mark.parametrize("writer", ["json", "torch"])
def test_a_full_disk_names_the_file_being_written(tmp_path, writer, monkeypatch):
    import errno
    import os

    path = tmp_path / "rounds.json"
    path.write_text("old")

    def full_disk(fd):  # the data reached the page cache, the disk has no room for it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as raised:
        write_json_atomic(path, {"rounds": []}) if writer == "json" else torch_save_atomic({"x": 1}, path)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)  # not the temporary file
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rounds.json"]
