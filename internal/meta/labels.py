"""Kubernetes-style labels: syntax checks for keys and values, and label selectors.

Selector grammar (comma = AND): `key`, `!key`, `key=value`, `key==value`, `key!=value`,
`key in (a,b)`, `key notin (a,b)`. `key!=value` and `notin` also match objects without the key,
as in Kubernetes. Pure functions; parse errors are SelectorError with a message for users.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# Checked with fullmatch: `$` also matches before a final newline, so `match` would take "prod\n",
# a name that is no DNS label and prints like "prod".
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


class SelectorError(ValueError):
    """The selector does not parse."""


def dns1123_label_error(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > 63:
        return "must be at most 63 characters"
    if not _DNS1123_LABEL.fullmatch(value):
        return "must consist of lowercase letters, digits and '-', and start and end with a letter or digit"
    return None


def dns1123_subdomain_error(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > 253:
        return "must be at most 253 characters"
    if not _DNS1123_SUBDOMAIN.fullmatch(value) or any(dns1123_label_error(p) for p in value.split(".")):
        return "must be lowercase DNS labels separated by '.'"
    return None


def qualified_name_error(key: str) -> str | None:
    """Error of a label/annotation key or finalizer: [dns-subdomain/]name."""
    if not key:
        return "key must not be empty"
    prefix, _, name = key.rpartition("/")
    if "/" in key and (err := dns1123_subdomain_error(prefix)):
        return f"key prefix {prefix!r} {err}"
    if not name:
        return "key name must not be empty"
    if len(name) > 63:
        return "key name must be at most 63 characters"
    if not _NAME.fullmatch(name):
        return "key name must be alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
    return None


def label_value_error(value: str) -> str | None:
    if value == "":
        return None
    if len(value) > 63:
        return "value must be at most 63 characters"
    if not _NAME.fullmatch(value):
        return "value must be alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
    return None


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "exists", "!exists", "in", "notin"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "in":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


EVERYTHING = Selector()

_PUNCTUATION = frozenset({"=", "==", "!=", "(", ")", ",", "!"})
_TOKEN = re.compile(r"\s*(!=|==|=|\(|\)|,|!|[^\s!=(),]+)")


def _tokens(text: str) -> list[str]:
    tokens = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:  # pragma: no cover - the pattern matches any non-space character
            raise SelectorError(f"unexpected character at position {pos}")
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


def parse_selector(text: str) -> Selector:
    """Parse a selector; empty text selects everything."""
    if len(text) > 4096:
        raise SelectorError("selector is longer than 4096 characters")
    tokens = _tokens(text)
    if not tokens:
        return EVERYTHING
    reqs: list[Requirement] = []
    i = 0

    def take() -> str:
        nonlocal i
        if i >= len(tokens):
            raise SelectorError("selector ends unexpectedly")
        i += 1
        return tokens[i - 1]

    def check_key(key: str) -> str:
        if key in _PUNCTUATION:
            raise SelectorError(f"expected a label key, got {key!r}")
        if err := qualified_name_error(key):
            raise SelectorError(f"invalid key {key!r}: {err}")
        return key

    def check_value(value: str) -> str:
        if err := label_value_error(value):
            raise SelectorError(f"invalid value {value!r}: {err}")
        return value

    while True:
        tok = take()
        if tok == "!":
            reqs.append(Requirement(check_key(take()), "!exists"))
        else:
            key = check_key(tok)
            nxt = tokens[i] if i < len(tokens) else ","
            if nxt == ",":
                reqs.append(Requirement(key, "exists"))
            elif nxt in ("=", "=="):
                take()
                value = "" if i >= len(tokens) or tokens[i] == "," else check_value(take())
                reqs.append(Requirement(key, "in", frozenset({value})))
            elif nxt == "!=":
                take()
                value = "" if i >= len(tokens) or tokens[i] == "," else check_value(take())
                reqs.append(Requirement(key, "notin", frozenset({value})))
            elif nxt in ("in", "notin"):
                take()
                if take() != "(":
                    raise SelectorError(f"expected '(' after {nxt!r}")
                values: set[str] = set()
                while True:
                    v = take()
                    if v == ")" and not values:
                        raise SelectorError(f"{nxt!r} needs at least one value")
                    if v == ")":
                        break
                    values.add(check_value(v))
                    sep = take()
                    if sep == ")":
                        break
                    if sep != ",":
                        raise SelectorError(f"expected ',' or ')' in value list, got {sep!r}")
                reqs.append(Requirement(key, nxt, frozenset(values)))
            else:
                raise SelectorError(f"unexpected {nxt!r} after key {key!r}")
        if i >= len(tokens):
            break
        if take() != ",":
            raise SelectorError(f"expected ',' between requirements, got {tokens[i - 1]!r}")
    return Selector(tuple(reqs))
