"""Label syntax and selectors."""

from __future__ import annotations

import pytest

from tke.internal.meta.labels import SelectorError, label_value_error, parse_selector, qualified_name_error


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {}, True),
        ("env=prod", {"env": "prod"}, True),
        ("env==prod", {"env": "dev"}, False),
        ("env!=prod", {}, True),
        ("env!=prod", {"env": "prod"}, False),
        ("env", {"env": ""}, True),
        ("!env", {"env": "x"}, False),
        ("tier in (web, api),!legacy", {"tier": "api"}, True),
        ("tier in (web,api),!legacy", {"tier": "api", "legacy": "1"}, False),
        ("tier notin (web)", {}, True),
        ("tke.cloud/role=master", {"tke.cloud/role": "master"}, True),
        ("a=,b", {"a": "", "b": "1"}, True),
    ],
)
def test_selector_matches(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(selector).matches(labels) is expected


@pytest.mark.parametrize("selector", ["a in ()", "a b", "=b", "a,,b", "a in (x", "!", "a in x", "Bad Key=1", "a=b c"])
def test_bad_selectors_are_refused(selector: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(selector)


def test_label_syntax() -> None:
    assert qualified_name_error("tke.cloud/role") is None
    assert qualified_name_error("UPPER.case_ok-1") is None
    assert qualified_name_error("Bad.Prefix/x") is not None
    assert qualified_name_error("/x") is not None
    assert qualified_name_error("a" * 64) is not None
    assert label_value_error("") is None
    assert label_value_error("-x") is not None
