"""Tests of the pseudo-label store: round trip, memory mapping, atomic writes, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mixsup_monai.rounds.store as store_module
from mixsup_monai.rounds import PseudoLabelPool, PseudoLabelSet, PseudoLabelStore
from mixsup_monai.utils import write_json_atomic


def _label_set(round_index: int = 1, n: int = 3, value: float = 0.5) -> PseudoLabelSet:
    items = [{"image": f"/slides/s{i}.tif", "location": [i * 64, 0], "size": [64, 64], "level": 1} for i in range(n)]
    labels = np.full((n, 1, 4, 4), value, np.float16)
    pools = {
        "positive": PseudoLabelPool(items, {"label": labels}),
        "negative": PseudoLabelPool([dict(items[0], label_fill=0.0)]),
    }
    return PseudoLabelSet(round_index, pools, {"pseudo/kept": float(n + 1)}, {"rule": "mixsup", "T": 0.4})


def test_round_trip_keeps_items_arrays_stats_and_meta(tmp_path):
    store = PseudoLabelStore(tmp_path / "store")
    saved = _label_set()
    folder = store.save(saved)
    assert folder == store.path(1) and store.exists(1) and store.rounds() == [1]
    loaded = store.load(1)
    assert loaded.round_index == 1 and loaded.sizes() == {"positive": 3, "negative": 1}
    assert loaded.pools["positive"].items == saved.pools["positive"].items
    assert isinstance(loaded.pools["positive"].arrays["label"], np.memmap)  # read lazily
    np.testing.assert_array_equal(loaded.pools["positive"].arrays["label"], saved.pools["positive"].arrays["label"])
    assert loaded.stats == {"pseudo/kept": 4.0} and loaded.meta == {"rule": "mixsup", "T": 0.4}
    item = loaded.pools["positive"].item(2)
    assert (
        item["location"] == [128, 0] and item["label"].shape == (1, 4, 4) and not isinstance(item["label"], np.memmap)
    )
    assert loaded.pools["negative"].item(0)["label_fill"] == 0.0


def test_save_replaces_an_older_copy_of_the_round(tmp_path):
    store = PseudoLabelStore(tmp_path)
    store.save(_label_set(value=0.25))
    store.save(_label_set(value=0.75, n=2))
    loaded = store.load(1, mmap=False)
    assert loaded.sizes()["positive"] == 2
    assert float(loaded.pools["positive"].arrays["label"].max()) == 0.75
    assert [p.name for p in tmp_path.iterdir()] == ["round_01"]  # no temporary or old folders left


def test_a_crash_while_saving_leaves_no_round_and_no_debris(tmp_path, monkeypatch):
    store = PseudoLabelStore(tmp_path)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store_module.np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        store.save(_label_set(round_index=2))
    assert not store.exists(2) and store.rounds() == []
    assert list(tmp_path.iterdir()) == []


def test_a_crash_while_replacing_keeps_the_old_round_complete(tmp_path, monkeypatch):
    store = PseudoLabelStore(tmp_path)
    store.save(_label_set(value=0.25))
    monkeypatch.setattr(store_module.np, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError, match="killed"):
        store.save(_label_set(value=0.75))
    assert float(store.load(1).pools["positive"].arrays["label"].max()) == 0.25


def test_incomplete_round_folder_is_not_listed(tmp_path):
    store = PseudoLabelStore(tmp_path)
    (tmp_path / "round_03").mkdir()  # e.g. created by hand, no items.json
    assert store.rounds() == [] and not store.exists(3)


def test_load_of_a_missing_round_names_the_rounds_there_are(tmp_path):
    store = PseudoLabelStore(tmp_path)
    store.save(_label_set(round_index=1))
    with pytest.raises(FileNotFoundError, match=r"round 4 not found .*complete rounds there: \[1\]"):
        store.load(4)


def test_load_refuses_another_store_version(tmp_path):
    store = PseudoLabelStore(tmp_path)
    folder = store.save(_label_set())
    record = json.loads((folder / "items.json").read_text())
    record["version"] = 99
    (folder / "items.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="version 99"):
        store.load(1)


def test_delete_from_removes_later_rounds(tmp_path):
    store = PseudoLabelStore(tmp_path)
    for r in (1, 2, 3):
        store.save(_label_set(round_index=r))
    store.delete_from(2)
    assert store.rounds() == [1]


def test_pool_rejects_arrays_of_another_length():
    with pytest.raises(ValueError, match="array 'label' has 2 rows but the pool has 3 items"):
        PseudoLabelPool([{}, {}, {}], {"label": np.zeros((2, 1))})


@pytest.mark.parametrize("bad", [-1, 1.5, True], ids=["negative", "float", "bool"])
def test_rejects_bad_round_index(tmp_path, bad):
    with pytest.raises(ValueError, match="round_index must be a non-negative int"):
        PseudoLabelStore(tmp_path).path(bad)


def test_write_json_atomic_keeps_the_old_file_when_serialisation_fails(tmp_path):
    path = write_json_atomic(tmp_path / "rounds.json", {"rounds": [1]})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"rounds": [object()]})
    assert json.loads(path.read_text()) == {"rounds": [1]}
    assert [p.name for p in tmp_path.iterdir()] == ["rounds.json"]


def test_a_full_disk_names_the_rounds_file_not_the_temporary_one(tmp_path, monkeypatch):
    import errno

    store = PseudoLabelStore(tmp_path)

    def full_disk(file, array):
        with open(file, "wb") as f:
            f.write(b"\x93NUMPY")  # the first bytes fit
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() reports it: no file name

    monkeypatch.setattr(store_module.np, "save", full_disk)
    with pytest.raises(OSError) as raised:
        store.save(_label_set(round_index=2))
    assert raised.value.filename == str(tmp_path / "round_02" / "positive.label.npy")
    assert list(tmp_path.iterdir()) == []  # the temporary folder is removed
