"""Tests of NPL selectivity on hand-made slides whose right assignment is known."""

from __future__ import annotations

import pytest
import torch

from mixsup_monai.methods.npl import (
    ProportionSelector,
    accumulate_negative_labels,
    fixed_threshold_pseudo_labels,
    negative_selectivity,
    positive_selectivity,
    predicted_class_ratio,
    proportion_pseudo_labels,
    round_counts,
    sum_absolute_error,
    summarize_selections,
)

SUBTYPES = ["lepidic", "acinar", "papillary", "micropapillary", "solid"]


def _slide(classes: list[int], confidences: list[float], n_classes: int) -> torch.Tensor:
    """(N, C) probabilities: the patch's class gets its confidence, the rest is shared equally."""
    probs = torch.empty(len(classes), n_classes, dtype=torch.float64)
    for i, (c, conf) in enumerate(zip(classes, confidences)):
        probs[i] = (1.0 - conf) / (n_classes - 1)
        probs[i, c] = conf
    return probs


# The issue's example (paper Fig. 1): 80 patches, cyan (micropapillary) predicted on 16 = 20 %,
# true 5 %. Patches 0-7 lepidic, 8-15 acinar, 16-23 papillary, 24-39 cyan, 40-79 solid.
CYAN_CONF = [0.62, 0.31, 0.55, 0.47, 0.33, 0.71, 0.39, 0.58, 0.36, 0.44, 0.66, 0.35, 0.52, 0.41, 0.49, 0.38]
SOLID_CONF = [0.40 + 0.01 * k for k in range(40)]
ISSUE_PROBS = _slide(
    [0] * 8 + [1] * 8 + [2] * 8 + [3] * 16 + [4] * 40, [0.9] * 24 + CYAN_CONF + SOLID_CONF, n_classes=5
)
ISSUE_TCR = [0.70, 0.10, 0.10, 0.05, 0.05]
# PCR = [0.1, 0.1, 0.1, 0.2, 0.5]; |TCR - PCR| = 0.6 + 0 + 0 + 0.15 + 0.45 = 1.2 -> SAE = min(1, 1.2) = 1
# NS_cyan = 1 * (0.20 - 0.05) * (1 - 0.05 / 0.20) = 0.15 * 0.75 = 0.1125 -> 0.1125 * 80 = 9 patches
# NS_solid = 1 * 0.45 * (1 - 0.05 / 0.5) = 0.405 -> 32.4 -> 32 patches; PS = (1 - 1) * ... = 0
# the 9 lowest cyan confidences 0.31 0.33 0.35 0.36 0.38 0.39 0.41 0.44 0.47 sit at cyan
# positions 1 4 11 8 15 6 13 9 3, i.e. patches 24 + those:
ISSUE_NOT_CYAN = [25, 27, 28, 30, 32, 33, 35, 37, 39]


def test_issue_example_least_confident_cyan_get_not_cyan():
    sel = proportion_pseudo_labels(ISSUE_PROBS, ISSUE_TCR)
    assert sel.sae == 1.0
    torch.testing.assert_close(sel.pcr, torch.tensor([0.1, 0.1, 0.1, 0.2, 0.5], dtype=torch.float64))
    torch.testing.assert_close(sel.ns, torch.tensor([0.0, 0.0, 0.0, 0.1125, 0.405], dtype=torch.float64))
    assert sel.n_negative.tolist() == [0, 0, 0, 9, 32]
    assert torch.nonzero(sel.negative[:, 3]).reshape(-1).tolist() == ISSUE_NOT_CYAN
    assert torch.nonzero(sel.negative[:, 4]).reshape(-1).tolist() == list(range(40, 72))  # 32 least confident
    assert sel.negative[:, :3].sum() == 0
    assert (sel.positive == -1).all()  # SAE = 1 -> no positive label


def test_issue_example_fraction_of_predicted():
    # NS_cyan * #predicted cyan = 0.1125 * 16 = 1.8 -> 2: confidences 0.31 (patch 25) and 0.33 (patch 28)
    # NS_solid * 40 = 16.2 -> 16: patches 40..55
    sel = proportion_pseudo_labels(ISSUE_PROBS, ISSUE_TCR, fraction_of="predicted")
    assert torch.nonzero(sel.negative[:, 3]).reshape(-1).tolist() == [25, 28]
    assert sel.n_negative.tolist() == [0, 0, 0, 2, 16]


# Adaptive positive slide: 20 patches, C = 3; class 0 on patches 0-11, 1 on 12-17, 2 on 18-19.
CONF_0 = [0.50, 0.91, 0.62, 0.85, 0.44, 0.77, 0.96, 0.58, 0.69, 0.81, 0.73, 0.88]
CONF_1 = [0.55, 0.93, 0.61, 0.87, 0.48, 0.79]
CONF_2 = [0.83, 0.67]
ADAPTIVE_PROBS = _slide([0] * 12 + [1] * 6 + [2] * 2, CONF_0 + CONF_1 + CONF_2, n_classes=3)
ADAPTIVE_TCR = [0.5, 0.3, 0.2]
# PCR = [0.6, 0.3, 0.1]; SAE = 0.1 + 0 + 0.1 = 0.2
# PS = 0.8 * min(TCR, PCR) = [0.4, 0.24, 0.08] -> x 20 = [8, 4.8, 1.6] -> [8, 5, 2]
# NS_0 = 0.2 * 0.1 * (1 - 0.5 / 0.6) = 0.00333 -> x 20 = 0.067 -> 0 negative labels
# top 8 of class 0: 0.96 (6) 0.91 (1) 0.88 (11) 0.85 (3) 0.81 (9) 0.77 (5) 0.73 (10) 0.69 (8)
# top 5 of class 1: 0.93 (13) 0.87 (15) 0.79 (17) 0.61 (14) 0.55 (12); patch 16 (0.48) left out
ADAPTIVE_POSITIVE = [-1, 0, -1, 0, -1, 0, 0, -1, 0, 0, 0, 0, 1, 1, 1, 1, -1, 1, 2, 2]


def test_adaptive_positive_selectivity_takes_most_confident():
    sel = proportion_pseudo_labels(ADAPTIVE_PROBS, ADAPTIVE_TCR)
    assert sel.sae == pytest.approx(0.2)
    torch.testing.assert_close(sel.ps, torch.tensor([0.4, 0.24, 0.08], dtype=torch.float64))
    assert sel.ns[0] == pytest.approx(0.2 * 0.1 / 6)
    assert sel.positive.tolist() == ADAPTIVE_POSITIVE
    assert sel.n_positive.tolist() == [8, 5, 2] and sel.n_negative.tolist() == [0, 0, 0]


def test_adaptive_fraction_of_predicted():
    # PS * #predicted = [0.4 * 12, 0.24 * 6, 0.08 * 2] = [4.8, 1.44, 0.16] -> [5, 1, 0]
    sel = proportion_pseudo_labels(ADAPTIVE_PROBS, ADAPTIVE_TCR, fraction_of="predicted")
    assert torch.nonzero(sel.positive == 0).reshape(-1).tolist() == [1, 3, 6, 9, 11]
    assert torch.nonzero(sel.positive == 1).reshape(-1).tolist() == [13]
    assert sel.n_positive.tolist() == [5, 1, 0]


def test_conflict_rule_with_accumulated_negative_labels():
    previous = torch.zeros(20, 3, dtype=torch.bool)
    previous[6, 0] = True  # the most confident class-0 patch carries "not 0" from an earlier round
    previous[18, 2] = True
    previous[12, 0] = True  # "not 0" on a class-1 patch does not block its positive label 1
    sel = proportion_pseudo_labels(ADAPTIVE_PROBS, ADAPTIVE_TCR, previous)
    expected = list(ADAPTIVE_POSITIVE)
    expected[6] = -1  # blocked; the next most confident (patch 2, 0.62) takes its place
    expected[2] = 0
    expected[18] = -1  # blocked; class 2 has no other candidate
    assert sel.positive.tolist() == expected
    assert sel.n_positive.tolist() == [8, 5, 1]


def test_conflict_rule_within_a_round_with_fixed_threshold():
    # class 0 should be absent (TCR 0) but every patch is predicted 0 with confidence >= 0.95:
    # PCR = [1, 0], SAE = min(1, 2) = 1, NS_0 = 1 * 1 * (1 - 0) = 1 -> all 4 get "not 0";
    # plain PL@0.95 would label all 4 as 0, the conflict rule removes them.
    probs = _slide([0, 0, 0, 0], [0.96, 0.97, 0.98, 0.99], n_classes=2)
    sel = proportion_pseudo_labels(probs, [0.0, 1.0], adaptive=False, positive_threshold=0.95)
    assert sel.negative[:, 0].all() and (sel.positive == -1).all()
    no_npl = proportion_pseudo_labels(probs, [0.0, 1.0], adaptive=False, negative=False)
    assert no_npl.positive.tolist() == [0, 0, 0, 0] and not no_npl.negative.any()


def test_ablation_switches():
    only_negative = proportion_pseudo_labels(ISSUE_PROBS, ISSUE_TCR, positive=False)
    assert (only_negative.positive == -1).all() and only_negative.n_negative.sum() == 41
    only_positive = proportion_pseudo_labels(ADAPTIVE_PROBS, ADAPTIVE_TCR, negative=False)
    assert only_positive.positive.tolist() == ADAPTIVE_POSITIVE


SAE_CASES = [
    ("sum_above_one_capped", [0.7, 0.1, 0.2], [0.1, 0.5, 0.4], 1.0),  # 0.6 + 0.4 + 0.2 = 1.2
    ("small_error", [0.5, 0.3, 0.2], [0.6, 0.3, 0.1], 0.2),
    ("exact", [0.25, 0.75], [0.25, 0.75], 0.0),
]


@pytest.mark.parametrize("name,tcr,pcr,expected", SAE_CASES, ids=[c[0] for c in SAE_CASES])
def test_sum_absolute_error_is_corrected_min(name, tcr, pcr, expected):
    assert sum_absolute_error(torch.tensor(tcr), torch.tensor(pcr)) == pytest.approx(expected)


SELECTIVITY_CASES = [
    # (name, tcr, pcr, sae, NS, PS)
    ("over_predicted_class", [0.05, 0.95], [0.20, 0.80], 0.3, [0.03375, 0.0], [0.035, 0.56]),
    ("absent_class_predicted", [0.0, 1.0], [0.4, 0.6], 0.8, [0.32, 0.0], [0.0, 0.12]),
    ("never_predicted_class", [0.5, 0.5], [0.0, 1.0], 1.0, [0.0, 0.25], [0.0, 0.0]),
]


@pytest.mark.parametrize("name,tcr,pcr,sae,ns,ps", SELECTIVITY_CASES, ids=[c[0] for c in SELECTIVITY_CASES])
def test_selectivity_equations(name, tcr, pcr, sae, ns, ps):
    # e.g. NS = 0.3 * 0.15 * (1 - 0.25) = 0.03375, PS = 0.7 * [0.05, 0.80]
    t, p = torch.tensor(tcr, dtype=torch.float64), torch.tensor(pcr, dtype=torch.float64)
    torch.testing.assert_close(negative_selectivity(t, p, sae), torch.tensor(ns, dtype=torch.float64))
    torch.testing.assert_close(positive_selectivity(t, p, sae), torch.tensor(ps, dtype=torch.float64))


def test_predicted_class_ratio():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    torch.testing.assert_close(predicted_class_ratio(probs), torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))


ROUND_CASES = [
    ("half_up", [0.5, 1.5, 2.5], [1, 2, 3]),
    ("below_half_down", [0.49, 2.4999], [0, 2]),
    ("float_noise_is_integer", [9.000000000000002, 8.999999999999998], [9, 9]),
]


@pytest.mark.parametrize("name,values,expected", ROUND_CASES, ids=[c[0] for c in ROUND_CASES])
def test_round_counts_half_up(name, values, expected):
    assert round_counts(torch.tensor(values, dtype=torch.float64)).tolist() == expected


def test_stochastic_rounding_is_unbiased_and_seeded():
    values = torch.full((4000,), 0.25, dtype=torch.float64)
    draws = round_counts(values, "stochastic", torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {0, 1}
    assert float(draws.double().mean()) == pytest.approx(0.25, abs=0.03)
    again = round_counts(values, "stochastic", torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    assert round_counts(torch.tensor([3.0]), "stochastic", torch.Generator().manual_seed(1)).tolist() == [3]
    with pytest.raises(ValueError, match="seeded generator"):
        round_counts(values, "stochastic")


def test_selector_stochastic_rounding_reproducible_per_round_and_slide():
    # NS_0 * 20 = 0.067 on the adaptive slide: round() never gives a negative label, stochastic sometimes
    selector = ProportionSelector(rounding="stochastic", seed=7)
    first = selector(ADAPTIVE_PROBS, ADAPTIVE_TCR, slide_id="S1", round_index=2)
    second = selector(ADAPTIVE_PROBS, ADAPTIVE_TCR, slide_id="S1", round_index=2)
    assert torch.equal(first.negative, second.negative) and torch.equal(first.positive, second.positive)
    counts = [
        int(selector(ADAPTIVE_PROBS, ADAPTIVE_TCR, slide_id=f"S{i}", round_index=r).n_negative[0])
        for i in range(10)
        for r in range(10)
    ]
    assert set(counts) == {0, 1} and 1 <= sum(counts) <= 20  # expected 100 * 0.067 = 6.7
    negated = selector(
        ADAPTIVE_PROBS, ADAPTIVE_TCR, slide_id=f"S{counts.index(1) // 10}", round_index=counts.index(1) % 10
    )
    assert torch.nonzero(negated.negative[:, 0]).reshape(-1).tolist() == [4]  # least confident class 0 (0.44)


def test_accumulate_negative_labels():
    previous = torch.tensor([[True, False, False], [False, False, False]])
    new = torch.tensor([[False, True, False], [False, False, True]])
    acc = accumulate_negative_labels(previous, new)
    assert acc.tolist() == [[True, True, False], [False, False, True]]
    assert accumulate_negative_labels(None, new).tolist() == new.tolist()
    with pytest.raises(ValueError, match=r"shape \(2, 2\), new ones \(2, 3\)"):
        accumulate_negative_labels(torch.zeros(2, 2, dtype=torch.bool), new)


def test_fixed_threshold_pseudo_labels():
    probs = torch.tensor([[0.96, 0.04], [0.5, 0.5], [0.02, 0.98], [0.95, 0.05]])
    assert fixed_threshold_pseudo_labels(probs).tolist() == [0, -1, 1, 0]  # 0.95 itself is kept
    assert fixed_threshold_pseudo_labels(probs, threshold=0.5).tolist() == [0, 0, 1, 0]
    with pytest.raises(ValueError, match=r"threshold must lie in \[0, 1\], got 1.5"):
        fixed_threshold_pseudo_labels(probs, threshold=1.5)


def test_summary_and_round_summary():
    summary = proportion_pseudo_labels(ISSUE_PROBS, ISSUE_TCR).summary(SUBTYPES)
    assert summary["sae"] == 1.0 and summary["patches"] == 80.0
    assert summary["negative/micropapillary"] == 9.0 and summary["negative/solid"] == 32.0
    assert summary["pcr/micropapillary"] == pytest.approx(0.2) and summary["tcr/micropapillary"] == pytest.approx(0.05)
    sels = [
        proportion_pseudo_labels(ADAPTIVE_PROBS, ADAPTIVE_TCR),
        proportion_pseudo_labels(ADAPTIVE_PROBS, ADAPTIVE_TCR, fraction_of="predicted"),
    ]
    round_summary = summarize_selections(sels, ["a", "b", "c"])
    assert round_summary["slides"] == 2.0 and round_summary["patches"] == 40.0
    assert round_summary["sae_mean"] == pytest.approx(0.2)
    assert [round_summary[f"positive/{k}"] for k in "abc"] == [13.0, 6.0, 2.0]  # [8, 5, 2] + [5, 1, 0]


def test_tcr_within_tolerance_is_renormalised():
    sel = proportion_pseudo_labels(ADAPTIVE_PROBS, [0.5, 0.3, 0.19])  # sum 0.99
    torch.testing.assert_close(sel.tcr, torch.tensor([0.5, 0.3, 0.19], dtype=torch.float64) / 0.99)


BAD_CASES = [
    ("tcr_sum_too_small", dict(tcr=[0.5, 0.3, 0.1]), r"TCR must sum to 1 ± 0\.02, got sum 0\.9"),
    ("tcr_percentages", dict(tcr=[50, 30, 20]), r"got sum 100.*percentages"),
    ("tcr_wrong_length", dict(tcr=[0.5, 0.5]), r"TCR has 2 classes but probs has 3 columns"),
    ("tcr_negative", dict(tcr=[1.2, -0.2, 0.0]), r"non-negative"),
    ("no_patches", dict(probs=torch.zeros(0, 3)), r"slide 'S1': no tumour patches"),
    ("logits_not_probs", dict(probs=torch.tensor([[2.0, -1.0, 0.5]])), r"slide 'S1'.*\[-1, 2\]"),
    (
        "previous_shape",
        dict(previous_negative=torch.zeros(3, 3, dtype=torch.bool)),
        r"previous_negative.*\(20, 3\)",
    ),
    ("bad_fraction_of", dict(fraction_of="slides"), r"slide"),
    ("bad_rounding", dict(rounding="stochastics"), r"stochastic"),
    ("stochastic_without_generator", dict(rounding="stochastic"), r"seeded generator"),
    (
        "positive_threshold",
        dict(adaptive=False, positive_threshold=1.5),
        r"positive_threshold must lie in \[0, 1\]",
    ),
]


@pytest.mark.parametrize("name,overrides,match", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_rejects_bad_input(name, overrides, match):
    kwargs = dict(probs=ADAPTIVE_PROBS, tcr=ADAPTIVE_TCR, slide_id="S1")
    kwargs.update(overrides)
    with pytest.raises(ValueError, match=match):
        proportion_pseudo_labels(**kwargs)
