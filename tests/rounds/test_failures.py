"""A round run that fails half-way loses nothing already written: a slide deleted after the start-up check, a disk
that fills up while a round is saved. The finished rounds stay byte-identical, no half-written round is listed,
no temporary file is left, the run ends with one clear line, and a resume gives the uninterrupted result."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

import mixsup_monai.utils.io as io_module
from mixsup_monai.handlers.mlflow_rounds import MLflowRoundLogger
from mixsup_monai.rounds import STATE_FILE, RoundEvents
from mixsup_monai.utils.errors import InputError, InputNotFoundError, error_line

RESUME_FIX = "restore it and resume the run (--resume true); finished rounds are kept"
DISK_FULL_FIX = "free disk space and resume the run (--resume true); finished rounds are kept"


@pytest.fixture(scope="module")
def cohort(tiny_cohort, tmp_path_factory) -> Path:
    """A copy of the tiny cohort: its slides are deleted and restored here."""
    root = tmp_path_factory.mktemp("failures") / "cohort"
    shutil.copytree(tiny_cohort.parent, root)
    return root / "datalist.json"


@pytest.fixture(scope="module")
def build(runner_builder, cohort):
    """``build(ckpt_dir, **kwargs)``: a 3-round runner (max_rounds=2) on the copied cohort."""
    return lambda ckpt, **kwargs: runner_builder(cohort, ckpt, max_rounds=2, **kwargs)


@pytest.fixture(scope="module")
def reference(build, tmp_path_factory):
    runner, net, theta2 = build(tmp_path_factory.mktemp("reference"))
    runner.run()
    return _results(runner, net, theta2)


def _results(runner, net, theta2) -> tuple:
    rounds = [
        (r["round"], r["metrics"], r["mstep"], r.get("pseudo_labels", {}).get("pseudo/kept")) for r in runner.records
    ]
    return (
        rounds,
        {k: v.clone() for k, v in net.state_dict().items()},
        {k: v.clone() for k, v in theta2.state_dict().items()},
    )


def _assert_same_results(a: tuple, b: tuple) -> None:
    assert a[0] == b[0]
    for ours, theirs in zip(a[1:], b[1:]):
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def _snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (temporary and hidden files included)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _listed_rounds(ckpt: Path) -> list[int]:
    return [r["round"] for r in json.loads((ckpt / STATE_FILE).read_text())["rounds"]]


def _resume(build, ckpt: Path, reference: tuple, finished: int, handlers=()) -> None:
    resumed, net, theta2 = build(ckpt, handlers=handlers)
    resumed.run()
    assert resumed.resumed_rounds == finished  # the finished rounds were loaded, not recomputed
    _assert_same_results(_results(resumed, net, theta2), reference)


# ---------------------------------------------------------------- a slide deleted after the start-up check
@pytest.mark.parametrize(
    "event, step",
    [(RoundEvents.MSTEP_COMPLETED, "prediction"), (Events.EPOCH_COMPLETED, "M-step")],
    ids=["before the E-step of round 1", "before the M-step of round 1"],
)
def test_a_deleted_slide_stops_the_run_and_a_resume_after_restoring_it_finishes(
    build, cohort, reference, tmp_path, event, step
):
    ckpt = tmp_path / "ckpt"
    slide = cohort.parent / "train_pos0.tif"  # pixel-labelled (M-step) and image-labelled (E-step)
    aside = tmp_path / "train_pos0.tif"
    runner, _, _ = build(ckpt)  # the start-up check (load_datalist) opened every slide
    on_disk: dict[str, str] = {}

    def delete_slide(engine):
        # the E-step check is in round 1 (after its M-step), the M-step check at the start of round 1
        if engine.state.round == (1 if event == RoundEvents.MSTEP_COMPLETED else 0):
            on_disk.update(_snapshot(ckpt))
            shutil.move(slide, aside)

    runner.add_event_handler(event, delete_slide)
    try:
        with pytest.raises(InputNotFoundError) as raised:
            runner.run()
    finally:
        if aside.exists():
            shutil.move(aside, slide)
    assert error_line(raised.value) == (
        f"error: slide not found ({slide}): round 1's {step} reads it but it is gone (moved or deleted after the "
        f"run started?); {RESUME_FIX}"
    )
    assert {"rounds.json", "rounds/round_00.pt", "pseudo_labels/round_01/items.json"} <= set(on_disk)
    assert _snapshot(ckpt) == on_disk  # round 0 and round 1's labels byte-identical, nothing else written
    assert _listed_rounds(ckpt) == [0]
    _resume(build, ckpt, reference, finished=1)


def test_a_slide_damaged_during_an_e_step_fails_the_round_and_leaves_no_shard(build, reference, tmp_path):
    ckpt = tmp_path / "ckpt"
    runner, _, _ = build(ckpt)
    victim = Path(runner.slides[2]["image"])  # not yet opened when the first slide is predicted (32-patch batches)
    original = victim.read_bytes()
    on_disk: dict[str, str] = {}

    def damage_a_later_slide(engine):
        if engine.state.round == 1 and not on_disk:  # round 1's E-step: the labels of round 2, slide by slide
            on_disk.update(_snapshot(ckpt))
            victim.write_bytes(original[: len(original) // 2])

    runner.add_event_handler(RoundEvents.SLIDE_PREDICTED, damage_a_later_slide)
    try:
        with pytest.raises(InputError) as raised:
            runner.run()
    finally:
        victim.write_bytes(original)
    assert error_line(raised.value).startswith(f"error: slide file is damaged ({victim}): ")
    assert "the file is truncated; copy the slide again from its source" in error_line(raised.value)
    assert _snapshot(ckpt) == on_disk  # rounds 0-1 byte-identical; the failed E-step's shards are gone
    assert not list(ckpt.rglob("*.tmp")) and _listed_rounds(ckpt) == [0]
    _resume(build, ckpt, reference, finished=1)


# ---------------------------------------------------------------- a disk that fills up while a round is saved
FULL_DISK_CASES = {
    # file whose atomic write fails: (round whose save fails, event after which the disk is full, finished rounds)
    "rounds/round_02.pt": (2, RoundEvents.ROUND_SCORED, 2),
    "rounds.json": (2, RoundEvents.ROUND_SCORED, 2),  # after round_02.pt was written: it is removed again
    "pseudo_labels/round_02/items.json": (1, RoundEvents.MSTEP_COMPLETED, 1),  # the E-step's labels for round 2
}


def _fill_disk(monkeypatch, ckpt: Path, file: str) -> None:
    """Make the atomic writer of ``ckpt/file`` fail half-way with ENOSPC, as a full disk does."""
    real = io_module._write_atomic
    target = ckpt / file

    def write_atomic(path, write):
        path = Path(path)
        is_target = path == target or (  # the store writes items.json into a temporary sibling of round_02
            target.parent.name == "round_02" and path.name == target.name and path.parent.name.startswith(".round_02.")
        )
        if not is_target:
            return real(path, write)

        def half_then_full(f):
            f.write(b"the first bytes fit")
            if file == "rounds.json":  # as open() reports it: with a file name (here the file's own)
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            raise OSError(errno.ENOSPC, "No space left on device")  # as write() reports it: no file name

        return real(path, half_then_full)

    monkeypatch.setattr(io_module, "_write_atomic", write_atomic)


def _mlflow_logger(tmp_path: Path) -> MLflowRoundLogger:
    return MLflowRoundLogger(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        experiment_name="failures",
        run_name="full_disk",
        artifact_location=str(tmp_path / "mlruns"),
    )


@pytest.mark.parametrize("file", list(FULL_DISK_CASES))
def test_a_full_disk_while_saving_a_round_keeps_the_finished_rounds(build, reference, tmp_path, monkeypatch, file):
    import mlflow

    failing_round, event, finished = FULL_DISK_CASES[file]
    ckpt = tmp_path / "ckpt"
    tracked = file == "rounds/round_02.pt"  # MLflow once: its store takes seconds to create
    handlers = [_mlflow_logger(tmp_path)] if tracked else []
    runner, _, _ = build(ckpt, handlers=handlers)
    on_disk: dict[str, str] = {}

    def disk_full(engine):
        if engine.state.round == failing_round:
            on_disk.update(_snapshot(ckpt))
            _fill_disk(monkeypatch, ckpt, file)

    runner.add_event_handler(event, disk_full)
    with pytest.raises(OSError) as raised:
        runner.run()
    assert raised.value.errno == errno.ENOSPC
    assert error_line(raised.value) == f"error: no space left on device ({ckpt / file}): {DISK_FULL_FIX}"
    assert f"rounds/round_0{finished - 1}.pt" in on_disk
    # the finished rounds byte-identical; no temporary file, no checkpoint of the failed round, no new round folder
    assert _snapshot(ckpt) == on_disk
    assert _listed_rounds(ckpt) == list(range(finished)) and len(runner.records) == finished
    if tracked:
        client = mlflow.MlflowClient(tracking_uri=handlers[0].tracking_uri)
        run_id = json.loads((ckpt / "mlflow_run.json").read_text())["run_id"]
        assert client.get_run(run_id).info.status == "FAILED"  # not left RUNNING
    monkeypatch.undo()  # disk space freed
    _resume(build, ckpt, reference, finished=finished, handlers=[_mlflow_logger(tmp_path)] if tracked else ())
    if tracked:
        assert client.get_run(run_id).info.status == "FINISHED"  # the failed run was continued and finished
