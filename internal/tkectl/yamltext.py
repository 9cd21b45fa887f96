"""YAML that tkectl reads (its configuration, the files of create and apply), which someone
else may have written: a usage error, never an exception out of tkectl, and bounded.

PyYAML builds an alias as a reference to its anchor's value, so a few hundred bytes of nested
aliases make a value of 10^9 leaves that costs nothing until it is walked; every walk (its text,
conversion to JSON) then takes minutes and gigabytes (10^7 leaves: 5 s and 488 MB). So the
values a text makes are counted without walking them twice (each anchor's value once), and a
text that expands to more than MAX_VALUES values is refused; so is one nested deeper than
Python's recursion allows (PyYAML's composer recursed out with RecursionError).
"""

from __future__ import annotations

from typing import Any

import yaml

from tke.internal.tkectl.errors import usage

# Far more than any configuration or manifest (a List of 5,000 objects of 100 fields each).
MAX_VALUES = 1_000_000


def load_all(text: str, name: str) -> list[Any]:
    """The documents of `text`; `name` says where it comes from in errors. yaml.YAMLError is
    left to the caller, which says what the text should have been."""
    try:
        docs = list(yaml.safe_load_all(text))
    except RecursionError:
        raise usage(f"{name} is nested too deeply") from None
    sizes: dict[int, int] = {}
    try:
        total = sum(_values(doc, sizes) for doc in docs)
    except RecursionError:
        raise usage(f"{name} is nested too deeply") from None
    if total > MAX_VALUES:
        raise usage(f"{name} expands to more than {MAX_VALUES} values (through YAML aliases): refused")
    return docs


def _values(value: Any, sizes: dict[int, int]) -> int:
    """How many values `value` is, expanded; each list or mapping counted once (`sizes`)."""
    if not isinstance(value, list | dict):
        return 1
    known = sizes.get(id(value))
    if known is not None:
        return known
    items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
    size = 1
    for key, item in items:
        size += _values(key, sizes) + _values(item, sizes)
        if size > MAX_VALUES:  # (stop early: the sum is only compared with the bound)
            break
    sizes[id(value)] = size
    return size
