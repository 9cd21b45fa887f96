"""`tkectl describe`: one object for people: metadata, spec and status as indented YAML, its
conditions as a table, and the events about it (clusters and machines).

A metadata field is one line: an annotation's value may hold newlines (Kubernetes' do), and a
tenant's annotation `x\nTenant:           platform` printed as it came added a "Tenant:" line
of its own to what an operator read. A field's value writes its line breaks and other
characters that are not printable as escapes (`\\n`, `\\u202e`); the spec and status are YAML,
which quote them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from tke.internal.tkectl.documents import dump_yaml
from tke.internal.tkectl.kinds.base import Kind, age, enum_text, time_text
from tke.internal.tkectl.output import cell, one_line, table


def describe(kind: Kind, obj: Any, events: Sequence[Any]) -> str:
    lines: list[str] = []
    if kind.tenanted:
        m = obj.metadata
        lines += [
            _field("Name", m.name),
            _field("Kind", kind.kind),
            _field("Tenant", m.tenant_id),
            _field("Labels", _pairs(m.labels)),
            _field("Annotations", _pairs(m.annotations)),
            _field("Finalizers", ", ".join(m.finalizers) or "<none>"),
            _field("Created", _time(m.creation_timestamp)),
            _field("Resource Version", m.resource_version),
            _field("Generation", str(m.generation)),
        ]
        if m.HasField("deletion_timestamp"):
            lines.append(_field("Deleting Since", _time(m.deletion_timestamp)))
        for part in ("spec", "status"):
            data = json_format.MessageToDict(getattr(obj, part))
            data.pop("conditions", None)
            lines.append(f"{part.capitalize()}:" + ("" if data else " <none>"))
            if data:
                lines.append(_indent(dump_yaml(data)))
        status = getattr(obj, "status", None)
        conditions = list(getattr(status, "conditions", []))
        if conditions:
            lines.append("Conditions:")
            rows = [
                [
                    c.type,
                    enum_text(c, "status", "CONDITION_STATUS_").capitalize(),
                    c.reason or "-",
                    str(c.retries),
                    age(c.last_transition_time),
                    cell(c.last_error or c.message or "-"),
                ]
                for c in conditions
            ]
            lines.append(_indent(table(["TYPE", "STATUS", "REASON", "RETRIES", "SINCE", "MESSAGE"], rows)))
    else:
        lines += [_field("Name", kind.name_of(obj)), _field("Kind", kind.kind)]
        lines.append(_indent(dump_yaml(json_format.MessageToDict(obj)), 0).rstrip("\n"))
    if kind.kind in ("Cluster", "Machine"):
        lines.append("Events:" + ("" if events else " <none>"))
        if events:
            rows = [
                [
                    age(e.spec.last_timestamp),
                    enum_text(e.spec, "type", "EVENT_TYPE_").capitalize() or "Normal",
                    cell(e.spec.reason),
                    str(e.spec.count),
                    cell(e.spec.message),
                ]
                for e in sorted(events, key=lambda e: (e.spec.last_timestamp.seconds, e.metadata.name))
            ]
            lines.append(_indent(table(["LAST SEEN", "TYPE", "REASON", "COUNT", "MESSAGE"], rows)))
    return "\n".join(line.rstrip("\n") for line in lines)


def _field(label: str, value: str) -> str:
    return f"{label + ':':<18}{one_line(value) or '<none>'}"


def _pairs(values: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "<none>"


def _time(ts: Message) -> str:
    when = time_text(ts)  # type: ignore[arg-type]
    return when if when.startswith("<") else f"{when} ({age(ts)} ago)"  # type: ignore[arg-type]


def _indent(text: str, width: int = 2) -> str:
    pad = " " * width
    return "\n".join(pad + line if line else line for line in text.rstrip("\n").splitlines())
