"""The E-step (and stage 2's validation) split across 2 gloo ranks gives the pseudo labels, records and weights of
one process.

The M-step is replicated (each rank trains on every batch, as one process does) so that the networks that predict
are the same; a DDP M-step, whose ranks share the batches, is the bundles' ``multi_gpu_train.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import build_runner  # noqa: E402


class _CountingPredictor:
    """Wraps the runner's predictor and records which slides this rank's network was run on."""

    def __init__(self, predictor, seen: list) -> None:
        self._predictor, self._seen = predictor, seen

    def __getattr__(self, name):
        return getattr(self._predictor, name)

    def predict(self, slides, network=None, description="predict"):
        self._seen.extend(s["image"] for s in slides)
        return self._predictor.predict(slides, network, description)

    def predict_across_ranks(self, slides, folder, network=None, description="predict"):
        # run the real method with this wrapper as ``self``, so that its call of ``self.predict`` is counted
        return type(self._predictor).predict_across_ranks(self, slides, folder, network, description)


def _run(datalist: Path, ckpt: Path) -> tuple[list, list, list, list, dict]:
    import mixsup_monai.rounds.predict as predict_module

    torch.set_num_threads(1)  # float reductions in one order, in every process
    detected: list[str] = []  # slides whose tissue this rank detected (to build their patch grids)
    detect = predict_module.detect_tissue

    def counting_detect(wsi, *args, **kwargs):
        detected.append(str(wsi.info.path))
        return detect(wsi, *args, **kwargs)

    predict_module.detect_tissue = counting_detect
    runner, net, _ = build_runner(datalist, ckpt, max_rounds=1)
    sampler = runner.trainer.data_loader.batch_sampler
    # every rank trains on every batch (the E-step is compared); _inner was built for the world size already
    sampler.num_replicas, sampler.rank, sampler._inner = 1, 0, None
    seen: list[str] = []
    seen_validation: list[str] = []
    runner.predictor = _CountingPredictor(runner.predictor, seen)
    runner.scorer.predictor = _CountingPredictor(runner.scorer.predictor, seen_validation)
    runner.run()
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    return runner.records, seen, seen_validation, detected, weights


def _worker(rank: int, world: int, store: str, datalist: str, ckpt: str, out: str) -> None:
    import datetime
    import faulthandler
    import os

    import torch.distributed as dist

    # as torchrun sets it: without it ignite guesses the local rank with an all_gather of host names, a collective
    # that can meet another rank's barrier
    os.environ["LOCAL_RANK"] = str(rank)
    # a rank that waits for a collective the other never calls fails with its stack instead of hanging the suite
    faulthandler.dump_traceback_later(150, exit=True)
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=180)
    )
    try:
        records, seen, seen_validation, detected, weights = _run(Path(datalist), Path(ckpt))
        result = {"records": records, "seen": seen, "seen_validation": seen_validation, "weights": weights}
        result["detected"] = detected
        torch.save(result, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _labels(ckpt: Path, round_index: int) -> tuple[dict, dict]:
    from mixsup_monai.rounds import PseudoLabelStore

    labels = PseudoLabelStore(ckpt / "pseudo_labels").load(round_index)
    items = {name: pool.items for name, pool in labels.pools.items()}
    arrays = {f"{n}.{k}": np.asarray(a) for n, pool in labels.pools.items() for k, a in pool.arrays.items()}
    return items, arrays


def _comparable(records: list[dict]) -> list[dict]:
    out = json.loads(json.dumps(records, default=float))
    for r in out:
        r.pop("time_s", None), r.pop("checkpoint", None)
        r.get("pseudo_labels", {}).pop("path", None)
    return out


def test_two_ranks_split_the_slides_and_make_the_labels_of_one_process(tiny_cohort, tmp_path):
    # the reference: one process, under torchrun as well (--nproc_per_node 1), the E-step not split
    def spawn(world: int, name: str) -> list[dict]:
        args = (world, str(tmp_path / f"{name}.store"), str(tiny_cohort), str(tmp_path / name), str(tmp_path / name))
        torch.multiprocessing.spawn(_worker, args=args, nprocs=world)
        return [torch.load(tmp_path / f"{name}.{r}", weights_only=False) for r in range(world)]

    (reference,) = spawn(1, "single")
    single, seen_single, weights_single = reference["records"], reference["seen"], reference["weights"]
    ranks = spawn(2, "ddp")
    # each rank ran the network on its half of the slides, each round; together on every slide once per round
    slides = sorted(set(seen_single))
    for result in ranks:
        assert 0 < len(result["seen"]) < len(seen_single)
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == sorted(seen_single) and len(slides) > 2
    assert not set(ranks[0]["seen"]) & set(ranks[1]["seen"])
    # stage 2's validation slides too (every round), and the records below hold the same validation metrics
    validation = reference["seen_validation"]
    assert sorted(ranks[0]["seen_validation"] + ranks[1]["seen_validation"]) == sorted(validation)
    assert all(0 < len(result["seen_validation"]) < len(validation) for result in ranks)
    # each rank detected the tissue of its own slides only, once each; the other ranks' grids are read back
    for result in ranks:
        own = set(result["seen"]) | set(result["seen_validation"])
        assert sorted(result["detected"]) == sorted(own), (result["detected"], own)
    # the same records, final weights and labels as one process
    for result in ranks:
        records = _comparable(result["records"])
        assert [r["mstep"] for r in records] == [r["mstep"] for r in _comparable(single)]
        assert records == _comparable(single)
        for name, tensor in weights_single.items():
            torch.testing.assert_close(result["weights"][name], tensor, rtol=0, atol=0)
    items, arrays = _labels(tmp_path / "single", 1)
    ddp_items, ddp_arrays = _labels(tmp_path / "ddp", 1)
    assert ddp_items == json.loads(json.dumps(items).replace(str(tmp_path / "single"), str(tmp_path / "ddp")))
    assert ddp_arrays.keys() == arrays.keys()
    for key, array in arrays.items():
        np.testing.assert_array_equal(ddp_arrays[key], array)
    assert not (tmp_path / "ddp" / "e_step").exists() or not any((tmp_path / "ddp" / "e_step").iterdir())
