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
    assert raised.value.filename == str(tmp_path / "round_02" / "positive.label.m00000.npy")
    assert list(tmp_path.iterdir()) == []  # the temporary folder is removed


# ---------------------------------------------------------------- rounds written slide by slide (shards)
def _slide_parts(slide: int, n: int = 3) -> tuple[list[dict], np.ndarray]:
    items = [{"image": f"/slides/s{slide}.tif", "location": [i * 64, 0], "size": [64, 64]} for i in range(n)]
    rng = np.random.default_rng(slide)
    return items, rng.random((n, 1, 8, 8)).astype(np.float16)


def test_a_round_opened_in_the_store_writes_each_slide_at_once_and_keeps_only_memory_maps(tmp_path):
    store = PseudoLabelStore(tmp_path)
    expected_items, expected_labels = [], []
    with store.open_round(2) as labels:
        for slide in range(4):
            items, rows = _slide_parts(slide)
            labels.add("positive", items, {"label": rows})
            labels.add("negative", [dict(items[0], label_fill=0.0)])
            expected_items += items
            expected_labels.append(rows)
            shards = labels.pools["positive"].arrays["label"]
            assert all(isinstance(s, np.memmap) for s in getattr(shards, "shards", [shards]))  # nothing held in RAM
        assert len(list(labels.shard_dir.glob("positive.label.*.npy"))) == 4 and not store.exists(2)
        labels.stats = {"pseudo/kept": 12.0}
        store.save(labels)
    assert [p.name for p in tmp_path.iterdir()] == ["round_02"]  # the temporary folder became the round
    loaded = store.load(2)
    array = loaded.pools["positive"].arrays["label"]
    assert isinstance(array, store_module.ShardedArray) and array.shape == (12, 1, 8, 8) and len(array.shards) == 4
    assert loaded.pools["positive"].items == expected_items and loaded.sizes()["negative"] == 4
    np.testing.assert_array_equal(np.asarray(array), np.concatenate(expected_labels))
    for index in (0, 2, 3, 11, -1):  # rows across shard boundaries
        np.testing.assert_array_equal(loaded.pools["positive"].item(index)["label"], np.asarray(array)[index])
    with pytest.raises(IndexError):
        array[12]


def test_a_rule_that_fails_half_way_leaves_no_round_and_no_shards(tmp_path):
    store = PseudoLabelStore(tmp_path)
    store.save(_label_set(round_index=1))
    before = sorted(p.name for p in (tmp_path / "round_01").iterdir())
    with pytest.raises(RuntimeError, match="slide 2 unreadable"), store.open_round(2) as labels:
        for slide in range(4):
            if slide == 2:
                raise RuntimeError("slide 2 unreadable")
            labels.add("positive", *_slide_parts(slide)[:1], {"label": _slide_parts(slide)[1]})
    assert [p.name for p in tmp_path.iterdir()] == ["round_01"] and store.rounds() == [1]
    assert sorted(p.name for p in (tmp_path / "round_01").iterdir()) == before


def test_a_full_disk_while_writing_a_shard_names_the_rounds_file(tmp_path, monkeypatch):
    store = PseudoLabelStore(tmp_path)
    real_save = np.save

    def full_disk_on_the_second_shard(file, array, *args, **kwargs):
        if str(file).endswith(".00001.npy"):
            with open(file, "wb") as f:
                f.write(b"half")
            raise OSError(28, "No space left on device")
        return real_save(file, array, *args, **kwargs)

    monkeypatch.setattr(store_module.np, "save", full_disk_on_the_second_shard)
    with pytest.raises(OSError) as raised, store.open_round(1) as labels:
        for slide in range(3):
            items, rows = _slide_parts(slide)
            labels.add("positive", items, {"label": rows})
    assert raised.value.filename == str(tmp_path / "round_01" / "positive.label.00001.npy")
    assert list(tmp_path.iterdir()) == []  # the half-written shard went with its temporary folder


def test_a_killed_runs_temporary_round_is_removed_when_the_round_is_opened_again(tmp_path):
    store = PseudoLabelStore(tmp_path)
    stale = tmp_path / ".round_01.rank0.abc.tmp"
    stale.mkdir()
    (stale / "positive.label.00000.npy").write_bytes(b"left by kill -9")
    with store.open_round(1) as labels:
        assert not stale.exists() and labels.shard_dir.exists()


def test_a_store_of_the_one_array_per_pool_format_is_refused_with_the_way_out(tmp_path):
    store = PseudoLabelStore(tmp_path)
    store.save(_label_set(round_index=1))
    file = tmp_path / "round_01" / "items.json"
    record = json.loads(file.read_text())
    record["version"] = 1
    file.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"version 1, this is version 2 \(one shard per slide\); start the run again"):
        store.load(1)


def test_sharded_array_checks_its_shards():
    a = store_module.ShardedArray([np.zeros((2, 3)), np.ones((0, 3)), np.ones((1, 3))])
    assert a.shape == (3, 3) and len(a.shards) == 2 and a[2].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="row shape and dtype"):
        store_module.ShardedArray([np.zeros((2, 3)), np.zeros((2, 4))])
