"""jsonio, the plugins' JSON through `_json` directly, against the standard library's json:
the same values from the same text, the same (compact) text from the same values, and a
ValueError where json raises one, or where json returns what JSON cannot hold (NaN, Infinity,
-Infinity, or a number beyond a double that json reads as infinity)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tke.internal.cni import jsonio

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
JSONISH = st.text(alphabet=' \t\n\r{}[]:,"\\/-+.0123456789eEtrufalsnNIiyx\u00e9\U0001f600', max_size=40)


def finite(value: Any) -> bool:
    """Whether `value` holds no NaN or infinity, at any depth."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, list):
        return all(finite(v) for v in value)
    return True


def outcome(loads: Any, text: str | bytes) -> str:
    """What loading `text` gives, comparably: the value as canonical JSON, or "ValueError"
    (also for a value JSON cannot hold, which json returns and jsonio refuses)."""
    try:
        value = loads(text)
    except ValueError:
        return "ValueError"
    return json.dumps(value, sort_keys=True) if finite(value) else "ValueError"


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_values_round_trip_as_json_writes_them(value: Any) -> None:
    text = jsonio.dumps(value)
    assert text == json.dumps(value, separators=(",", ":"))
    assert jsonio.loads(text) == json.loads(text)
    assert jsonio.loads(text.encode()) == json.loads(text)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(JSONISH, VALUES.map(lambda v: json.dumps(v, indent=1)), st.binary(max_size=30)))
def test_any_text_loads_as_json_loads_it(text: str | bytes) -> None:
    if isinstance(text, bytes):
        try:
            decoded = text.decode("utf-8")  # the plugins' input is UTF-8 (json also guesses UTF-16/32)
        except UnicodeDecodeError:
            assert outcome(jsonio.loads, text) == "ValueError"
            return
        assert outcome(jsonio.loads, text) == outcome(json.loads, decoded)
    else:
        assert outcome(jsonio.loads, text) == outcome(json.loads, text)


def test_errors_say_where() -> None:
    for text, words in (
        ("", "expecting a value at offset 0"),
        ("{} x", "extra data at offset 3"),
        ('{"a" 1}', "Expecting ':'"),
    ):
        try:
            jsonio.loads(text)
        except jsonio.DecodeError as err:
            assert words in str(err), (text, err)
        else:
            raise AssertionError(f"{text!r} loaded")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("NaN", "NaN is not a JSON value"),
        ('{"mtu": Infinity}', "Infinity is not a JSON value"),
        ('{"ipam": {"x": [1, -Infinity]}}', "-Infinity is not a JSON value"),
        ('{"rate": 1e999}', "the number 1e999 is too large"),
        ("-1E400", "the number -1E400 is too large"),
    ],
)
def test_what_json_has_no_value_for_is_refused(text: str, words: str) -> None:
    # json accepts these and dumps would hand them on as NaN/Infinity, which is no JSON.
    with pytest.raises(jsonio.DecodeError, match=words):
        jsonio.loads(text)
    assert jsonio.loads("[1.7976931348623157e308, -0.0, 1e-400]") == [1.7976931348623157e308, -0.0, 0.0]
