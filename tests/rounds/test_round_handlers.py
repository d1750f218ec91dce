"""Tests of the round handlers: selection rule, round table, early stopping over rounds."""

from __future__ import annotations

import pytest
from ignite.engine import Engine

from mixsup_monai.handlers.round_selection import RoundEarlyStopping, flatten_record, select_round, write_rounds_table


def _records(values: list[float], metric: str = "stage2_loss") -> list[dict]:
    return [
        {"round": r, "pool_sizes": {"pixel": 9}, "metrics": {metric: v}, "pseudo_labels": {"pseudo/kept": 10.0 * r}}
        for r, v in enumerate(values)
    ]


SELECTION_CASES = [
    ("lowest_loss", [0.7, 0.5, 0.6], "min", 1),
    ("ties_go_to_the_earlier_round", [0.7, 0.5, 0.5], "min", 1),
    ("nan_never_wins", [float("nan"), 0.9, 0.8], "min", 2),
    ("highest_auc", [0.7, 0.9, 0.8], "max", 1),
]


@pytest.mark.parametrize("name,values,mode,expected", SELECTION_CASES, ids=[c[0] for c in SELECTION_CASES])
def test_select_round(name, values, mode, expected):
    assert select_round(_records(values), "stage2_loss", mode) == expected


def test_select_round_names_the_available_metrics():
    with pytest.raises(ValueError, match=r"no round has a finite 'val_loss'; available metrics: \[.*'stage2_loss'"):
        select_round(_records([0.5]), "val_loss")


def test_flatten_record_prefixes():
    flat = flatten_record({**_records([0.5])[0], "mstep": {"train_loss": 0.3}, "time_s": 2})
    assert flat == {
        "round": 0.0,
        "pool/pixel": 9.0,
        "pseudo/kept": 0.0,
        "mstep/train_loss": 0.3,
        "stage2_loss": 0.5,
        "time_s": 2.0,
    }


def test_round_table_marks_the_selected_round(tmp_path):
    csv_path, md_path = write_rounds_table(_records([0.7, 0.5]), tmp_path, selected=1)
    lines = md_path.read_text().splitlines()
    assert lines[0].startswith("| round | pool/pixel | pseudo/kept") and lines[-1].endswith("| **yes** |")
    assert csv_path.read_text().splitlines()[2].endswith(",1")


def test_early_stopping_after_patience_rounds_without_improvement():
    values = [0.7, 0.6, 0.65, 0.66, 0.5]

    def one_round(engine, _):
        r = engine.state.epoch - 1
        engine.records.append({"round": r, "metrics": {"val_loss": values[r]}})

    engine = Engine(one_round)
    engine.records = []
    stopper = RoundEarlyStopping(metric="val_loss", mode="min", patience=2)
    stopper.attach(engine)
    engine.run([None], max_epochs=len(values))
    # best 0.6 in round 1; rounds 2 and 3 do not improve: stop after round 3, round 4 never runs
    assert [r["round"] for r in engine.records] == [0, 1, 2, 3] and stopper.stopped_after == 3


def test_early_stopping_checks_loaded_rounds_at_start():
    engine = Engine(lambda e, b: e.records.append({"round": len(e.records), "metrics": {}}))
    engine.records = [{"round": r, "metrics": {"val_loss": v}} for r, v in enumerate([0.5, 0.6, 0.7])]
    stopper = RoundEarlyStopping(metric="val_loss", patience=2)
    stopper.attach(engine)
    engine.run([None], max_epochs=5)
    assert len(engine.records) == 3 and stopper.stopped_after == 2  # nothing added after a resume


def test_early_stopping_rejects_bad_patience():
    with pytest.raises(ValueError, match="patience must be an int >= 1"):
        RoundEarlyStopping(patience=0)
