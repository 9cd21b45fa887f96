"""Label and field selectors of list and watch requests. Labels use the project's parser of
Kubernetes' grammar (`a=b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`); fields are
`path=value`, `path==value` and `path!=value` joined by commas, over metadata.name,
metadata.namespace and the field labels the resource declares (catalog.py), as in Kubernetes.
A selector that does not parse is 400 BadRequest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support.kube.catalog import Resource
from tests.support.kube.errors import bad_request
from tke.internal.meta.labels import Selector, SelectorError, parse_selector


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    value: str
    equal: bool

    def matches(self, obj: dict[str, Any]) -> bool:
        return (field_value(obj, self.path) == self.value) == self.equal


def field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    if node is None:
        return ""
    if path == "source" and isinstance(node, dict):  # events: source.component
        return str(node.get("component", ""))
    return str(node)


def parse_fields(resource: Resource, text: str) -> tuple[FieldRequirement, ...]:
    out = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        for op in ("!=", "==", "="):
            if op in term:
                path, _, value = term.partition(op)
                break
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        equal = op != "!="
        path = path.strip()
        if path not in ("metadata.name", "metadata.namespace", *resource.fields):
            raise bad_request(f"field label not supported: {path}")
        out.append(FieldRequirement(path, value.strip(), equal))
    return tuple(out)


def parse_labels(text: str) -> Selector:
    try:
        return parse_selector(text)
    except SelectorError as err:
        raise bad_request(f"unable to parse requirement: {err}") from None


Predicate = Callable[[dict[str, Any]], bool]


def predicate(resource: Resource, namespace: str, labels: str, fields: str) -> Predicate:
    """Whether an object is in the request's scope and matches its selectors."""
    label_selector = parse_labels(labels)
    field_requirements = parse_fields(resource, fields)

    def matches(obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        if namespace and meta.get("namespace") != namespace:
            return False
        if not label_selector.matches(meta.get("labels") or {}):
            return False
        return all(r.matches(obj) for r in field_requirements)

    return matches


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels, matchExpressions) against labels. None matches
    nothing, {} matches everything (policy/v1 and apps/v1 semantics)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True
