"""Printing objects: a table (default), a wide table, YAML or JSON; and `terminal_text`, which
everything tkectl prints goes through.

What tkectl prints comes from servers (names, messages, annotations, errors): a tenant writes
an event's message, a hostile server writes anything. Printed as they came, their escape
sequences cleared the screen, retitled the window or hid text. So every character that
drives a terminal (C0 controls but newline and tab, DEL, C1 controls) is printed as its
`\\u` escape, which is also a valid escape inside JSON and YAML double-quoted strings (and
PyYAML and json already escape the C0 ones themselves)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message

from tke.internal.tkectl.documents import dump_json, dump_yaml, list_dict, to_dict
from tke.internal.tkectl.kinds.base import Column, Kind

FORMATS = ("table", "wide", "yaml", "json", "name")

# Characters that drive a terminal: C0 controls but tab and newline, DEL, C1 controls.
_CONTROLS = {c: f"\\u{c:04x}" for c in (*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0))}


def terminal_text(text: str) -> str:
    """`text` with the characters that drive a terminal written as `\\u` escapes."""
    return text if text.isprintable() else text.translate(_CONTROLS)


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
    cells = [cell(c.value(obj)) for c in columns(kind, fmt)]
    if qualified and columns(kind, fmt)[0].header == "NAME":
        cells[0] = f"{kind.singular}/{cells[0]}"
    return cells


_BREAKS = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(text: str) -> str:
    """`text` as one line of printable characters: a line break as `\\n`, every other
    character that is not printable (controls, bidirectional overrides and isolates, line and
    paragraph separators, zero-width characters) as its `\\u` escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _BREAKS.get(c) or _escape(c) for c in text)


def _escape(c: str) -> str:
    return f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"


def cell(value: object) -> str:
    """A table's cell: one line, its runs of white space one space, and every other character
    that is not printable as its escape (`one_line`): a bidirectional override (U+202E) in a
    tenant's event message reversed the rest of its row, and the columns after it, on a
    terminal that shows right-to-left text."""
    return one_line(" ".join(str(value).split())) or "<none>"


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
