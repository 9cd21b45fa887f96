"""The PATCH content types kube-apiserver accepts, applied to an object (a JSON document):

- application/merge-patch+json: RFC 7386 JSON merge patch, exactly.
- application/json-patch+json: RFC 6902 JSON patch (add, remove, replace, move, copy, test).
- application/strategic-merge-patch+json: an approximation of Kubernetes' strategic merge
  patch. It is a merge patch, except that lists of objects with a known merge key (containers,
  volumes, env and volumeMounts, ports, conditions, addresses, ownerReferences, ...) merge item
  by item on that key instead of being replaced, metadata.finalizers merges as a set, and the
  directives `$patch: replace|delete` (in maps and list items), `$retainKeys` and
  `$deleteFromPrimitiveList/FIELD` are honoured; `$setElementOrder/FIELD` is accepted and
  ignored (items keep their order, new ones go last). The real patch reads the merge keys from
  the Go types' struct tags; this table covers the kinds the stand-in serves.
Server-side apply (application/apply-patch+yaml) is in managed.py.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.support.kube.errors import StatusError, bad_request

# Field name -> the key its list items merge on (strategic merge patch). "ports" depends on
# where it is: container ports merge on containerPort, service ports on port.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "addresses": "type",
    "ownerReferences": "uid",
    "resourceClaims": "name",
}
# Lists of strings that merge as sets.
SET_LISTS = frozenset({"finalizers"})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# --- RFC 6902 ---------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _patch_error(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _patch_error(message: str) -> StatusError:
    return StatusError(422, "Invalid", f"the server rejected our request due to an error in our request: {message}")


def _parent(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _patch_error(f"doc is missing path: /{'/'.join(parts)}")
    return node


def _index(node: list[Any], part: str, *, insert: bool) -> int:
    if insert and part == "-":
        return len(node)
    if not part.isdigit() or int(part) > len(node) - (0 if insert else 1):
        raise _patch_error(f"index {part!r} out of range")
    return int(part)


def _get(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return doc
    node = _parent(doc, parts)
    last = parts[-1]
    if isinstance(node, dict) and last in node:
        return node[last]
    if isinstance(node, list):
        return node[_index(node, last, insert=False)]
    raise _patch_error(f"doc is missing path: /{'/'.join(parts)}")


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    node = _parent(doc, parts)
    if isinstance(node, dict):
        node[parts[-1]] = value
    elif isinstance(node, list):
        node.insert(_index(node, parts[-1], insert=True), value)
    else:
        raise _patch_error(f"cannot add at /{'/'.join(parts)}")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    node = _parent(doc, parts)
    if isinstance(node, dict) and parts[-1] in node:
        return node.pop(parts[-1])
    if isinstance(node, list):
        return node.pop(_index(node, parts[-1], insert=False))
    raise _patch_error(f"unable to remove nonexistent key: /{'/'.join(parts)}")


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid json patch operation: {op!r}")
        kind, parts = op["op"], _pointer(str(op["path"]))
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "replace":
            _get(doc, parts)
            if not parts:
                doc = copy.deepcopy(op.get("value"))
            else:
                _remove(doc, parts)
                doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            source = _pointer(str(op.get("from", "")))
            value = _remove(doc, source) if kind == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, parts, value)
        elif kind == "test":
            if _get(doc, parts) != op.get("value"):
                raise _patch_error(f"testing value /{'/'.join(parts)} failed")
        else:
            raise bad_request(f"unknown json patch operation {kind!r}")
    return doc


# --- strategic merge patch (approximation) ------------------------------------------------------


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        raise bad_request("strategic merge patch must be a JSON object")
    return _smp_map(target if isinstance(target, dict) else {}, patch)


def _smp_map(target: dict[str, Any], patch: dict[str, Any]) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    body = {k: v for k, v in patch.items() if k != "$patch"}
    if directive == "replace":
        return _strip_directives(body)
    out = dict(target)
    retain = body.pop("$retainKeys", None)
    for key, value in body.items():
        if key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.partition("/")[2]
            if isinstance(out.get(field), list) and isinstance(value, list):
                out[field] = [v for v in out[field] if v not in value]
            continue
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(out[key] if isinstance(out.get(key), dict) else {}, value)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        elif isinstance(value, list):
            out[key] = _smp_list(key, out.get(key), value)
        else:
            out[key] = value
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        return "containerPort" if any(isinstance(i, dict) and "containerPort" in i for i in items) else "port"
    return MERGE_KEYS.get(field)


def _smp_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    current = current if isinstance(current, list) else []
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [_strip_directives(i) for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    if field in SET_LISTS:
        return [*current, *(v for v in patch if v not in current)]
    key = _merge_key(field, patch + current)
    if key is None or not all(isinstance(i, dict) for i in patch):
        return [_strip_directives(i) for i in patch]
    out = [copy.deepcopy(i) for i in current]
    for item in patch:
        if key not in item:
            raise bad_request(f"map: {item!r} does not contain declared merge key: {key}")
        at = next((n for n, i in enumerate(out) if isinstance(i, dict) and i.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if at is not None:
                out.pop(at)
        elif at is None:
            out.append(_strip_directives(item))
        else:
            out[at] = _smp_map(out[at], item)
    return out


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value
