"""jsonio, the plugins' JSON through `_json` directly, against the standard library's json:
the same values from the same text, the same (compact) text from the same values, and a
ValueError where json raises one."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tke.internal.cni import jsonio

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
JSONISH = st.text(alphabet=' \t\n\r{}[]:,"\\/-+.0123456789eEtrufalsnNIiyx\u00e9\U0001f600', max_size=40)


def outcome(loads: Any, text: str | bytes) -> str:
    """What loading `text` gives, comparably: the value as canonical JSON, or "ValueError"."""
    try:
        return json.dumps(loads(text), sort_keys=True)
    except ValueError:
        return "ValueError"


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
