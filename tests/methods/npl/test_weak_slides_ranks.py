"""NPL's weak slides under 2 gloo ranks: each rank builds the tumour patch grids of its share, all get the same list."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import torch


def _weak(datalist: str) -> tuple[list[str], list[str]]:
    """``(kept weak slides, slides whose grid this process built)`` for the NPL demo's training slides."""
    from mixsup_monai.data import load_datalist, slides_of
    from mixsup_monai.methods.npl import weak_slides
    from mixsup_monai.rounds import SlidePatchPredictor

    predictor = SlidePatchPredictor(None, patch_size=64, level=1, tissue_mask_key="tumour_region", progress=False)
    kept = weak_slides(slides_of(load_datalist(datalist, task="npl"), "training"), predictor=predictor)
    return [s["image"] for s in kept], sorted(predictor._grids)


def _worker(rank: int, world: int, store: str, datalist: str, out: str) -> None:
    import torch.distributed as dist

    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120)
    )
    try:
        torch.save(_weak(datalist), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_split_the_grids_and_keep_the_same_slides(demo_datalist, tmp_path: Path) -> None:
    """The kept slides are those of one process on both ranks; each rank built about half of the grids, together
    every slide's once."""
    datalist = str(demo_datalist("npl"))
    single_kept, single_built = _weak(datalist)
    args = (2, str(tmp_path / "store"), datalist, str(tmp_path / "out"))
    torch.multiprocessing.spawn(_worker, args=args, nprocs=2)
    (kept0, built0), (kept1, built1) = (torch.load(tmp_path / f"out.{r}") for r in range(2))
    assert kept0 == kept1 == single_kept
    assert len(single_built) >= 2 and sorted(built0 + built1) == single_built
    assert built0 and built1 and not set(built0) & set(built1)
