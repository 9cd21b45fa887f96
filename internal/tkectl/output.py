"""Printing objects: a table (default), a wide table, YAML or JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message

from tke.internal.tkectl.documents import dump_json, dump_yaml, list_dict, to_dict
from tke.internal.tkectl.kinds.base import Column, Kind

FORMATS = ("table", "wide", "yaml", "json", "name")


def columns(kind: Kind, fmt: str) -> tuple[Column, ...]:
    return kind.columns + (kind.wide_columns if fmt == "wide" else ())


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]
    ]
    return "\n".join(lines)


def row(kind: Kind, fmt: str, obj: Any, *, qualified: bool = False) -> list[str]:
    """The cells of `obj`; `qualified` names it TYPE/NAME (a table among tables of other types)."""
    cells = [_cell(c.value(obj)) for c in columns(kind, fmt)]
    if qualified and columns(kind, fmt)[0].header == "NAME":
        cells[0] = f"{kind.singular}/{cells[0]}"
    return cells


def _cell(value: object) -> str:
    return " ".join(str(value).split()) or "<none>"


def render(kind: Kind, fmt: str, objects: Sequence[Message], *, single: bool, qualified: bool = False) -> str:
    """What `get` prints; `single` when the user named one object (YAML/JSON print it bare);
    `qualified` names objects TYPE/NAME in a table (one of several types)."""
    if fmt in ("yaml", "json"):
        data: Any = to_dict(kind, objects[0]) if single else list_dict(kind, objects)
        return dump_yaml(data).rstrip("\n") if fmt == "yaml" else dump_json(data)
    if fmt == "name":
        return "\n".join(f"{kind.singular}/{kind.name_of(o)}" for o in objects)
    if not objects:
        return ""
    return table([c.header for c in columns(kind, fmt)], [row(kind, fmt, o, qualified=qualified) for o in objects])
