"""NPL's per-slide random draws are keyed by the slide's name, not its path: the same cohort in two folders agrees."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mixsup_monai.data import load_datalist, slides_of
from mixsup_monai.methods.npl import NPLRule, ProportionSelector, proportion_classes, weak_slides
from mixsup_monai.rounds import SlidePatchPredictor
from mixsup_monai.rounds.predict import SlidePrediction
from mixsup_monai.rounds.store import PseudoLabelSet


@pytest.fixture(scope="module")
def two_copies(tmp_path_factory) -> list[Path]:
    """The tiny NPL demo cohort (relative paths in its datalist), copied into two unrelated folders."""
    from mixsup_monai.demo import make_demo_cohort

    made = make_demo_cohort("npl", tmp_path_factory.mktemp("made"), seed=0, n_slides=5, progress=False, num_workers=0)
    copies = [tmp_path_factory.mktemp("clone") / "deep" / "checkout", tmp_path_factory.mktemp("elsewhere") / "d"]
    for dst in copies:
        shutil.copytree(made.parent, dst)
    return copies


def npl_round(root: Path, seed: int) -> PseudoLabelSet:
    """The pseudo-label step of one NPL round on the cohort in ``root``, stochastic rounding seeded ``seed``.

    Real tumour patch grids of the weak slides (``SlidePatchPredictor``); the class probabilities are a fixed
    noisy function of each slide's proportions (the same for both folders: same slides, same patch order), so
    SAE < 1 and the rounding of NS / PS counts is random.
    """
    datalist = load_datalist(root / "datalist.json", task="npl")
    classes = list(datalist["classes"])
    training = slides_of(datalist, "training")
    subtypes = proportion_classes(classes, training)
    predictor = SlidePatchPredictor(
        torch.nn.Conv2d(3, len(classes), 1),  # only its grid is used: the outputs are replaced below
        patch_size=64,
        level=1,
        tissue_mask_key="tumour_region",
        activation="softmax",
        progress=False,
    )
    rng = np.random.default_rng(0)

    def proportional(pred: SlidePrediction) -> SlidePrediction:
        tcr = np.array([pred.slide["proportions"].get(c, 0.0) for c in subtypes])
        logits = np.full((len(pred), len(classes)), -3.0)
        logits[:, [classes.index(c) for c in subtypes]] = np.log(tcr + 0.1) + rng.normal(0, 1, (len(pred), len(tcr)))
        return dataclasses.replace(pred, outputs=torch.softmax(torch.as_tensor(logits), dim=1).float())

    predictions = [proportional(p) for p in predictor.predict(weak_slides(training, predictor=predictor))]
    assert len(predictions) >= 2 and all(len(p) for p in predictions)
    rule = NPLRule(classes, subtypes, selector=ProportionSelector(rounding="stochastic", seed=seed))
    return rule(predictions, round_index=1)


def portable(labels: PseudoLabelSet, root: Path) -> dict:
    """The pseudo labels with each patch's slide path relative to the cohort folder (the only expected difference)."""
    pools = {}
    for name, pool in labels.pools.items():
        items = [{**it, "image": Path(it["image"]).relative_to(root).as_posix()} for it in pool.items]
        pools[name] = (items, {k: np.asarray(v).tolist() for k, v in pool.arrays.items()})
    return {"pools": pools, "stats": labels.stats, "meta": labels.meta}


def test_same_round_in_two_folders_gives_the_same_pseudo_labels(two_copies):
    a, b = two_copies
    first, second = portable(npl_round(a, seed=0), a), portable(npl_round(b, seed=0), b)
    assert first["pools"]["positive"][0] and first["pools"]["negative"][0]
    assert first == second
    # the draws do matter: another seed changes the labels, so equal labels above mean equal draws
    assert portable(npl_round(a, seed=1), a)["pools"] != first["pools"]


def test_selector_refuses_an_absolute_path_as_seed_key():
    probs, tcr = torch.tensor([[0.9, 0.1], [0.2, 0.8]]), [0.5, 0.5]
    selector = ProportionSelector(rounding="stochastic", seed=0)
    for path in ("/data/slides/a.tiff", "C:\\slides\\a.tiff"):
        with pytest.raises(ValueError, match="absolute path"):
            selector(probs, tcr, slide_id=path)
        with pytest.raises(ValueError, match="absolute path"):
            selector(probs, tcr, slide_id="a", seed_key=path)
        assert selector(probs, tcr, slide_id=path, seed_key="a").slide_id == path  # a path for messages is fine
        assert ProportionSelector(rounding="round")(probs, tcr, slide_id=path).slide_id == path  # no draws


def one_patch(image: str) -> SlidePrediction:
    probs = torch.tensor([[0.1, 0.6, 0.3]])
    items = [{"image": image, "location": [0, 0], "size": [64, 64], "level": 0}]
    slide = {"image": image, "proportions": {"lepidic": 0.5, "acinar": 0.5}}
    return SlidePrediction(slide, items, probs, probs.max(dim=1).values, 1.0, (64, 64))


def test_rule_names_slides_by_stem_and_refuses_two_files_with_one_name():
    rule = NPLRule(["non-cancer", "lepidic", "acinar"], ["lepidic", "acinar"])
    labels = rule([one_patch("/x/a.tiff"), one_patch("/x/b.v2.tiff")], round_index=1)
    assert sorted(labels.meta["slides"]) == ["a", "b.v2"]
    assert "pseudo/sae/b.v2" in labels.stats
    with pytest.raises(ValueError, match=r"'/x/a.tiff' and '/y/a.svs' share the name 'a'"):
        rule([one_patch("/x/a.tiff"), one_patch("/y/a.svs")], round_index=1)


def test_weak_slides_refuse_two_files_with_one_name_before_training():
    slides = [{"image": f"/{c}/s.tiff", "proportions": {"lepidic": 1.0}, "tumour_mask": "t.png"} for c in "xy"]
    with pytest.raises(ValueError, match=r"'/x/s.tiff' and '/y/s.tiff' share the name 's'"):
        weak_slides(slides)
