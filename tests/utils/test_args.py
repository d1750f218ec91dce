"""Tests of the command-line value helpers bundle configs call."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixsup_monai.utils import as_bool

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, True),
        (False, False),
        ("true", True),
        ("False", False),
        (" YES ", True),
        ("no", False),
        ("1", True),
        ("0", False),
        (1, True),
        (0, False),
    ],
)
def test_as_bool_reads_bools_words_and_digits(value, expected):
    assert as_bool(value) is expected


@pytest.mark.parametrize("value", ["flase", "", "2", 2, -1, 1.0, None, "t"])
def test_as_bool_refuses_anything_else_naming_the_item(value):
    with pytest.raises(ValueError, match=rf"resume must be true or false \(also 1/0, yes/no\), got {value!r}"):
        as_bool(value, "resume")


@pytest.mark.parametrize("bundle", ["mixsup", "npl"])
@pytest.mark.parametrize("value, expected", [("false", False), (False, False), ("true", True), (True, True)])
def test_bundle_runner_gets_a_bool_resume_from_the_command_line(bundle, value, expected):
    """``--resume false`` arrives as the string ``"false"``: the runner's ``resume`` must still be ``False``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "train.json"))
    parser["resume"] = value
    assert parser.get_parsed_content("rounds#runner#resume") is expected
