"""Field ownership (metadata.managedFields) and server-side apply
(application/apply-patch+yaml), approximated field by field:

- An object's fields are the leaves of its JSON: maps are walked key by key; a list, a scalar
  or an empty map is one field. (The real apply also merges lists by their list-map keys, such
  as containers by name; here such a list is owned and replaced as a whole.)
- A write that is not an apply (create, PUT, PATCH) gives its field manager (the fieldManager
  parameter, else the client's user agent up to the first '/') the fields it changed, taken
  from any other manager.
- An apply: a field the applied configuration sets to a value other than the live one, owned by
  another manager, is a conflict (409 Conflict, naming manager and field) unless force=true,
  which takes the field over. The manager then owns exactly the applied fields; a field it
  applied before and no longer applies is removed, unless another manager owns it too. Equal
  values are shared by both managers, as in Kubernetes.
- managedFields sent by a client are ignored (Kubernetes would let a client reset them).
apiVersion, kind, status (outside the status subresource) and the server-set metadata are
never owned."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.support.kube.errors import StatusError

FieldPath = tuple[str, ...]
_OWNED_METADATA = frozenset({"labels", "annotations", "finalizers", "ownerReferences"})


def fields_of(obj: dict[str, Any] | None, subresource: str = "") -> dict[FieldPath, Any]:
    """The object's owned fields and their values: all but status, or only status."""
    if not obj:
        return {}
    out: dict[FieldPath, Any] = {}
    for key, value in obj.items():
        if subresource == "status":
            if key == "status" and isinstance(value, dict):
                _walk(value, ("status",), out)
        elif key == "metadata" and isinstance(value, dict):
            owned = {k: v for k, v in value.items() if k in _OWNED_METADATA}
            _walk(owned, ("metadata",), out)
        elif key not in ("apiVersion", "kind", "status"):
            _walk({key: value}, (), out)
    return out


def _walk(node: dict[str, Any], prefix: FieldPath, out: dict[FieldPath, Any]) -> None:
    for key, value in node.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            _walk(value, path, out)
        else:
            out[path] = value


def to_fields_v1(paths: Iterable[FieldPath]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in sorted(paths):
        node = root
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return root


def from_fields_v1(doc: Any, prefix: FieldPath = ()) -> set[FieldPath]:
    out: set[FieldPath] = set()
    if not isinstance(doc, dict):
        return out
    for key, value in doc.items():
        if not key.startswith("f:"):
            continue
        path = (*prefix, key[2:])
        if isinstance(value, dict) and any(k.startswith("f:") for k in value):
            out |= from_fields_v1(value, path)
        else:
            out.add(path)
    return out


@dataclass
class Entry:
    manager: str
    operation: str  # "Apply" or "Update"
    api_version: str
    time: str
    subresource: str = ""
    paths: set[FieldPath] = field(default_factory=set)

    def render(self) -> dict[str, Any]:
        out = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(self.paths),
        }
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def entries_of(obj: dict[str, Any] | None) -> list[Entry]:
    if not obj:
        return []
    out = []
    for e in obj.get("metadata", {}).get("managedFields") or []:
        out.append(
            Entry(
                e.get("manager", ""),
                e.get("operation", "Update"),
                e.get("apiVersion", ""),
                e.get("time", ""),
                e.get("subresource", ""),
                from_fields_v1(e.get("fieldsV1")),
            )
        )
    return out


def _store(obj: dict[str, Any], entries: list[Entry]) -> None:
    kept = [e.render() for e in entries if e.paths]
    if kept:
        obj["metadata"]["managedFields"] = kept
    else:
        obj["metadata"].pop("managedFields", None)


def _entry(entries: list[Entry], manager: str, operation: str, subresource: str, api_version: str) -> Entry:
    for e in entries:
        if (e.manager, e.operation, e.subresource) == (manager, operation, subresource):
            return e
    e = Entry(manager, operation, api_version, "", subresource)
    entries.append(e)
    return e


def record_update(
    old: dict[str, Any] | None, new: dict[str, Any], *, manager: str, now: str, api_version: str, subresource: str = ""
) -> None:
    """Set new's managedFields after a write that is not an apply."""
    before, after = fields_of(old, subresource), fields_of(new, subresource)
    changed = {p for p, v in after.items() if p not in before or before[p] != v}
    gone = set(before) - set(after)
    entries = entries_of(old)
    for e in entries:
        if e.subresource == subresource:
            e.paths -= changed | gone
    if changed:
        e = _entry(entries, manager, "Update", subresource, api_version)
        e.paths |= changed
        e.time = now
    _store(new, entries)


MISSING = object()


def apply(live: dict[str, Any] | None, applied: dict[str, Any], manager: str, force: bool, now: str) -> dict[str, Any]:
    """The object after `manager` applies `applied` to `live` (None: create)."""
    wanted = fields_of(applied)
    current = fields_of(live)
    entries = entries_of(live)
    mine = _entry(entries, manager, "Apply", "", applied["apiVersion"])
    others = [e for e in entries if e is not mine and not e.subresource]
    differs = {p for p, v in wanted.items() if current.get(p, MISSING) not in (MISSING, v)}
    conflicts = [(e, p) for e in others for p in sorted(differs) if p in e.paths]
    if conflicts and not force:
        raise _conflict_error(conflicts, applied)
    result = copy.deepcopy(live) if live else {"apiVersion": applied["apiVersion"], "kind": applied["kind"]}
    result["apiVersion"] = applied["apiVersion"]
    result.setdefault("metadata", {})
    for key in ("name", "namespace"):
        if key in applied.get("metadata", {}):
            result["metadata"][key] = applied["metadata"][key]
    for e in others:
        e.paths -= differs
    for path in sorted(mine.paths - set(wanted), key=len, reverse=True):
        if not any(path in e.paths for e in others):
            _remove(result, path, entries)
    for path, value in wanted.items():
        _set(result, path, copy.deepcopy(value))
    if mine.paths != set(wanted) or differs or not live:
        mine.time = now
    mine.paths = set(wanted)
    _store(result, entries)
    return result


def _set(obj: dict[str, Any], path: FieldPath, value: Any) -> None:
    node = obj
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if value == {} and isinstance(node.get(path[-1]), dict):
        return  # an empty map claims the map, not the keys others set in it
    node[path[-1]] = value


def _remove(obj: dict[str, Any], path: FieldPath, entries: list[Entry]) -> None:
    """Remove a field, then the maps it leaves empty that nobody owns as a field of their own."""
    chain = [obj]
    for part in path[:-1]:
        nxt = chain[-1].get(part)
        if not isinstance(nxt, dict):
            return
        chain.append(nxt)
    chain[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):
        parent_path = path[:depth]
        if chain[depth] or any(parent_path in e.paths for e in entries):
            break
        chain[depth - 1].pop(path[depth - 1], None)


def _conflict_error(conflicts: list[tuple[Entry, FieldPath]], applied: dict[str, Any]) -> StatusError:
    def dotted(p: FieldPath) -> str:
        return "." + ".".join(p)

    n = len(conflicts)
    if n == 1:
        e, p = conflicts[0]
        message = f'Apply failed with 1 conflict: conflict with "{e.manager}" using {e.api_version}: {dotted(p)}'
    else:
        lines = "".join(f'\n- conflict with "{e.manager}" using {e.api_version}: {dotted(p)}' for e, p in conflicts)
        message = f"Apply failed with {n} conflicts:{lines}"
    causes = [
        {"reason": "FieldManagerConflict", "message": f'conflict with "{e.manager}" using {e.api_version}'}
        | {"field": dotted(p)}
        for e, p in conflicts
    ]
    details: dict[str, Any] = {"name": applied.get("metadata", {}).get("name", ""), "causes": causes}
    return StatusError(409, "Conflict", message, details)
