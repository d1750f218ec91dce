"""NPLRule on hand-made slide predictions: column mapping, pools, accumulation over rounds, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixsup_monai.methods.npl import NPLRule, ProportionSelector
from mixsup_monai.rounds.predict import SlidePrediction
from mixsup_monai.rounds.store import PseudoLabelPool, PseudoLabelSet

#: network classes; the proportions are over the last three (non-cancer is not a subtype)
CLASSES = ["non-cancer", "lepidic", "acinar", "micropapillary"]
SUBTYPES = CLASSES[1:]


def prediction(name: str, subtype: list[int], confidence: list[float], proportions: dict | None) -> SlidePrediction:
    """Slide of ``len(subtype)`` patches; patch i predicted as subtype column ``subtype[i]`` with ``confidence[i]``.

    The non-cancer column gets a small constant (it never wins), the other subtypes share the rest.
    """
    n = len(subtype)
    probs = torch.zeros(n, len(CLASSES), dtype=torch.float64)
    for i, (c, conf) in enumerate(zip(subtype, confidence)):
        probs[i, 0] = 0.01
        probs[i, 1:] = (0.99 - conf) / 2
        probs[i, 1 + c] = conf
    items = [{"image": f"/data/{name}.tif", "location": [64 * i, 0], "size": [64, 64], "level": 0} for i in range(n)]
    slide = {"image": f"/data/{name}.tif"}
    if proportions is not None:
        slide["proportions"] = proportions
    return SlidePrediction(slide, items, probs, probs.max(dim=1).values, 1.0, (64 * n, 64))


# 20 patches: 10 lepidic (conf 0.90..0.81), 6 acinar (0.80..0.75), 4 micropapillary (cyan) with confidences
# 0.70, 0.40, 0.60, 0.50. Truth: lepidic 0.55, acinar 0.40, cyan 0.05.
# PCR = [0.5, 0.3, 0.2]; SAE = 0.05 + 0.10 + 0.15 = 0.30
# NS_cyan = 0.3 * 0.15 * (1 - 0.05 / 0.2) = 0.03375 -> x 20 = 0.675 -> 1: the least confident cyan, patch 17 (0.40)
# PS = 0.7 * min(TCR, PCR) = [0.35, 0.21, 0.035] -> x 20 = [7, 4.2, 0.7] -> [7, 4, 1]
SUBTYPE = [0] * 10 + [1] * 6 + [2] * 4
CONF = [0.90 - 0.01 * k for k in range(10)] + [0.80 - 0.01 * k for k in range(6)] + [0.70, 0.40, 0.60, 0.50]
TRUTH = {"lepidic": 0.55, "acinar": 0.40, "micropapillary": 0.05}


def rule(**kwargs) -> NPLRule:
    return NPLRule(CLASSES, SUBTYPES, selector=ProportionSelector(rounding="round"), **kwargs)


def locations(pool) -> list[int]:
    return [it["location"][0] // 64 for it in pool.items]


def test_labels_are_in_network_class_indices():
    labels = rule(oversample=False)([prediction("a", SUBTYPE, CONF, TRUTH)], round_index=1)
    positive, negative = labels.pools["positive"], labels.pools["negative"]
    # 7 most confident lepidic (0-6) -> class 1, 4 most confident acinar (10-13) -> class 2, cyan 16 -> class 3
    assert locations(positive) == [0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 16]
    assert [it["label"] for it in positive.items] == [1] * 7 + [2] * 4 + [3]
    assert locations(negative) == [17]
    np.testing.assert_array_equal(negative.arrays["negative"], [[False, False, False, True]])  # "not micropap."
    assert labels.stats["pseudo/sae_mean"] == pytest.approx(0.3)
    assert labels.stats["pseudo/negative/micropapillary"] == 1 and labels.stats["pseudo/positive/lepidic"] == 7
    assert labels.meta["slides"]["a"]["negative"] == [0, 0, 1]


def test_positive_pool_is_oversampled_to_balanced_classes():
    labels = rule(oversample=True)([prediction("a", SUBTYPE, CONF, TRUTH)], round_index=1)
    counts = np.bincount([it["label"] for it in labels.pools["positive"].items], minlength=4)
    assert counts.tolist() == [0, 7, 7, 7]
    assert labels.stats["pseudo/positive"] == 12 and labels.stats["pseudo/positive_oversampled"] == 21


def test_negative_labels_accumulate_across_rounds():
    first = rule(oversample=False)([prediction("a", SUBTYPE, CONF, TRUTH)], round_index=1)
    # round 2: patch 17 (round 1: "not cyan") is now predicted acinar with confidence 0.85
    subtype2 = list(SUBTYPE)
    subtype2[17] = 1
    conf2 = list(CONF)
    conf2[17] = 0.85
    # PCR = [0.5, 0.35, 0.15]; SAE = 0.05 + 0.05 + 0.10 = 0.2; NS_cyan = 0.2 * 0.1 * (1 - 1/3) * 20 = 0.27 -> 0
    # so no new negative label in round 2: only the accumulated "not cyan" of patch 17 remains
    multi = rule(oversample=False)([prediction("a", subtype2, conf2, TRUTH)], round_index=2, previous=first)
    assert locations(multi.pools["negative"]) == [17]
    np.testing.assert_array_equal(multi.pools["negative"].arrays["negative"], [[False, False, False, True]])
    assert multi.stats["pseudo/negative"] == 0 and multi.stats["pseudo/negative_accumulated"] == 1
    single = rule(oversample=False, accumulate=False)(
        [prediction("a", subtype2, conf2, TRUTH)], round_index=2, previous=first
    )
    assert len(single.pools["negative"]) == 0


def test_accumulated_negative_blocks_the_positive_label():
    first = rule(oversample=False)([prediction("a", SUBTYPE, CONF, TRUTH)], round_index=1)
    # round 2: patch 17 becomes the MOST confident cyan patch; it carries "not cyan" so it may not get "cyan"
    conf2 = list(CONF)
    conf2[17] = 0.95
    labels = rule(oversample=False)([prediction("a", SUBTYPE, conf2, TRUTH)], round_index=2, previous=first)
    cyan = [it["location"][0] // 64 for it in labels.pools["positive"].items if it["label"] == 3]
    assert 17 not in cyan and cyan == [16]


def test_union_of_new_and_previous_negatives_on_one_patch():
    first = rule(oversample=False)([prediction("a", SUBTYPE, CONF, TRUTH)], round_index=1)
    arr = np.array(first.pools["negative"].arrays["negative"])
    arr[0, 2] = True  # patch 17 also got "not acinar" earlier
    previous = PseudoLabelSet(
        round_index=1, pools={"negative": PseudoLabelPool(first.pools["negative"].items, {"negative": arr})}
    )
    labels = rule(oversample=False)([prediction("a", SUBTYPE, CONF, TRUTH)], round_index=2, previous=previous)
    np.testing.assert_array_equal(labels.pools["negative"].arrays["negative"], [[False, False, True, True]])


def test_slide_without_tumour_patch_is_skipped_by_name(caplog):
    empty = prediction("empty_slide", [], [], TRUTH)
    labels = rule()([empty, prediction("a", SUBTYPE, CONF, TRUTH)], round_index=1)
    assert labels.meta["skipped"] == ["empty_slide"] and labels.stats["pseudo/skipped_slides"] == 1
    assert "empty_slide" in caplog.text
    with pytest.raises(ValueError, match="none of the weak slides has a tumour patch.*empty_slide"):
        rule()([empty], round_index=1)


BAD_PROPORTIONS = [
    ("unknown_class", {"lepidic": 0.5, "solid": 0.5}, r"slide '/data/bad\.tif'.*\['solid'\], not among"),
    ("not_summing_to_one", {"lepidic": 0.5, "acinar": 0.2}, r"slide '/data/bad\.tif'.*sum to 1"),
    ("percentages", {"lepidic": 55, "acinar": 40, "micropapillary": 5}, r"bad\.tif.*percentages\? divide by 100"),
    ("missing", None, r"slide '/data/bad\.tif': no 'proportions'"),
]


@pytest.mark.parametrize("name, proportions, match", BAD_PROPORTIONS, ids=[c[0] for c in BAD_PROPORTIONS])
def test_rejects_bad_proportions_naming_the_slide(name, proportions, match):
    with pytest.raises(ValueError, match=match):
        rule()([prediction("bad", SUBTYPE, CONF, proportions)], round_index=1)


def test_rejects_logits_or_wrong_width():
    pred = prediction("a", SUBTYPE, CONF, TRUTH)
    pred.outputs = pred.outputs[:, :3]
    with pytest.raises(ValueError, match=r"needs \(N, 4\) class probabilities"):
        rule()([pred], round_index=1)


def test_rejects_proportion_classes_not_in_classes():
    with pytest.raises(ValueError, match=r"unknown: \['solid'\]"):
        NPLRule(CLASSES, ["lepidic", "solid"])
