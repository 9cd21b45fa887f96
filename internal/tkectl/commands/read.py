"""get, describe and watch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message

from tke.internal.tkectl.commands.runtime import Outcome, Runtime
from tke.internal.tkectl.describe import describe
from tke.internal.tkectl.documents import dump_json, dump_yaml, to_dict
from tke.internal.tkectl.errors import CliError, Exit
from tke.internal.tkectl.kinds.base import Kind, Query
from tke.internal.tkectl.kinds.registry import lookup
from tke.internal.tkectl.output import columns, render, row

RESUMABLE = {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "INTERNAL", "OK", "CANCELLED"}
WATCH_RETRIES = 5


async def fetch(rt: Runtime, kind: Kind, names: Sequence[str], query: Query, outcome: Outcome) -> list[Message]:
    """The named objects (reporting each missing one), or the list when no name is given."""
    if not names:
        return list(await kind.list(rt.conn, query))
    found: list[Message] = []
    for name in names:
        try:
            found.append(await kind.get(rt.conn, name, query.tenant))
        except CliError as err:
            outcome.fail(err)
    return found


async def get(rt: Runtime, kind: Kind, names: Sequence[str], query: Query, fmt: str) -> Exit:
    outcome = Outcome(rt)
    objects = await fetch(rt, kind, names, query, outcome)
    if objects or (not names and fmt in ("yaml", "json")):  # an empty list is still a List
        rt.print(render(kind, fmt, objects, single=len(names) == 1))
    elif not names and fmt in ("table", "wide"):
        where = f" in tenant {query.tenant}" if query.tenant not in ("", "*") else ""
        rt.warn(f"no {kind.plural} found{where}")
    return outcome.code


async def get_many(rt: Runtime, queries: Sequence[tuple[Kind, Query]], fmt: str) -> Exit:
    """`get clusters,machines`, as kubectl prints several types: a table per type with a blank
    line between them and names as TYPE/NAME, or one List of every object (YAML, JSON)."""
    outcome = Outcome(rt)
    found = [(kind, await fetch(rt, kind, (), query, outcome)) for kind, query in queries]
    if fmt in ("yaml", "json"):
        data = {"kind": "List", "items": [to_dict(kind, o) for kind, objects in found for o in objects]}
        rt.print(dump_yaml(data).rstrip("\n") if fmt == "yaml" else dump_json(data))
        return outcome.code
    tables = [render(kind, fmt, objects, single=False, qualified=True) for kind, objects in found if objects]
    if tables:
        rt.print(("\n\n" if fmt != "name" else "\n").join(tables))
    for kind, objects in found:
        if not objects and fmt in ("table", "wide"):
            rt.warn(f"no {kind.plural} found")
    return outcome.code


async def describe_cmd(rt: Runtime, kind: Kind, names: Sequence[str], query: Query) -> Exit:
    outcome = Outcome(rt)
    objects = await fetch(rt, kind, names, query, outcome)
    events_kind = lookup("events")
    texts = []
    for obj in objects:
        events: Sequence[Message] = []
        if kind.kind in ("Cluster", "Machine"):
            about = {"for-kind": kind.kind, "for-name": kind.name_of(obj)}
            try:
                events = await events_kind.list(rt.conn, Query(tenant=kind.tenant_of(obj), filters=about))
            except CliError as err:  # events are extra: show the object anyway
                rt.warn(f"events of {kind.ref(obj)} unavailable: {err.message}")
        texts.append(describe(kind, obj, events))
    rt.print("\n\n".join(texts))
    return outcome.code


async def watch(rt: Runtime, kind: Kind, name: str, query: Query, *, fmt: str, seconds: float) -> Exit:
    """Print changes until Ctrl-C or for `seconds` (0: no limit); resume a broken stream
    from the last revision seen, and start over when that revision is compacted."""
    printer = _Printer(rt, kind, fmt)
    try:
        async with asyncio.timeout(seconds or None):
            await _watch(rt, kind, name, query, printer)
    except TimeoutError:
        pass
    return Exit.OK


async def _watch(rt: Runtime, kind: Kind, name: str, query: Query, printer: _Printer) -> None:
    version, failures = "", 0
    while True:
        try:
            async for event in kind.watch(rt.conn, query, version):
                failures = 0
                version = kind.version_of(event.object) or version
                if event.type == "BOOKMARK" or (name and kind.name_of(event.object) != name):
                    continue
                printer.event(event.type, event.object)
            problem = "the server ended the watch"
        except CliError as err:
            if err.code == "OUT_OF_RANGE":
                version, problem = "", "the watch fell behind etcd's history; starting over"
            elif err.code in RESUMABLE and failures < WATCH_RETRIES:
                problem = err.message
            else:
                raise
        failures += 1
        if failures > WATCH_RETRIES:
            raise CliError(Exit.UNAVAILABLE, f"watch gave up after {WATCH_RETRIES} attempts: {problem}")
        rt.warn(f"{problem}; resuming" + (f" from resource_version {version}" if version else ""))
        await asyncio.sleep(min(0.5 * 2**failures, 5.0))


class _Printer:
    def __init__(self, rt: Runtime, kind: Kind, fmt: str) -> None:
        self.rt, self.kind, self.fmt = rt, kind, fmt
        self.headed = False
        self.widths: list[int] = []

    def event(self, type_: str, obj: Message) -> None:
        if self.fmt == "json":
            self.rt.print(json.dumps({"type": type_, "object": to_dict(self.kind, obj)}, ensure_ascii=False))
        elif self.fmt == "yaml":
            self.rt.print("---\n" + dump_yaml({"type": type_, "object": to_dict(self.kind, obj)}).rstrip("\n"))
        elif self.fmt == "name":
            self.rt.print(f"{type_} {self.kind.singular}/{self.kind.name_of(obj)}")
        else:
            headers = ["EVENT", *(c.header for c in columns(self.kind, self.fmt))]
            cells: list[Any] = [type_, *row(self.kind, self.fmt, obj)]
            # Fixed widths from the header line: rows print as they come, and stay aligned.
            if not self.headed:
                self.widths = [max(len(h) + 2, 12) for h in headers]
                self.rt.print(_line(headers, self.widths))
                self.headed = True
            self.rt.print(_line(cells, self.widths))


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "   ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
