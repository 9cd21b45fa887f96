"""create -f, apply -f, edit and delete."""

from __future__ import annotations

import asyncio
import os
import shlex
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from tke.internal.tkectl.commands.runtime import Outcome, Runtime
from tke.internal.tkectl.documents import Document, dump_yaml, parse, read_source, to_dict
from tke.internal.tkectl.errors import CliError, Exit, usage
from tke.internal.tkectl.kinds.base import Kind, Query


def documents(files: Sequence[str]) -> list[Document]:
    """Every object of every file, all parsed before anything is written."""
    if not files:
        raise usage("name a file with -f FILE (- for standard input)")
    docs: list[Document] = []
    for path in files:
        docs += parse(read_source(path), "standard input" if path == "-" else path)
    return docs


async def create(rt: Runtime, files: Sequence[str]) -> Exit:
    outcome = Outcome(rt)
    for doc in documents(files):
        doc.kind.prepare(doc.message, rt.tenant)
        try:
            created = await doc.kind.create(rt.conn, doc.message, doc.extra)
        except CliError as err:
            outcome.fail(err, f"{doc.kind.ref(doc.message)}: ")
            continue
        rt.print(f"{doc.kind.ref(created)} created")
    return outcome.code


def apply_paths(doc: Document) -> list[str]:
    """The paths `apply` replaces: those of the kind's paths the file sets (so that apply
    never clears labels or finalizers a file does not mention)."""
    paths = []
    for path in doc.kind.apply_paths:
        head, _, rest = path.partition(".")
        section = doc.fields.get(head)
        if (not rest and section is not None) or (isinstance(section, dict) and rest in section):
            paths.append(path)
    return paths


async def apply(rt: Runtime, files: Sequence[str]) -> Exit:
    outcome = Outcome(rt)
    for doc in documents(files):
        kind, obj = doc.kind, doc.message
        kind.prepare(obj, rt.tenant)
        try:
            rt.print(f"{kind.ref(obj)} {await _apply_one(rt, doc)}")
        except CliError as err:
            outcome.fail(err, f"{kind.ref(obj)}: ")
    return outcome.code


async def _apply_one(rt: Runtime, doc: Document) -> str:
    kind, obj = doc.kind, doc.message
    try:
        current = await kind.get(rt.conn, kind.name_of(obj), kind.tenant_of(obj))
    except CliError as err:
        if err.exit_code != Exit.NOT_FOUND:
            raise
        await kind.create(rt.conn, obj, doc.extra)
        return "created"
    paths = apply_paths(doc)
    if kind.same(current, obj, paths):
        return "unchanged"
    if kind.tenanted and not kind.version_of(obj):
        # Update exactly the state read above: a change made meanwhile fails with ABORTED.
        obj.metadata.resource_version = kind.version_of(current)  # type: ignore[attr-defined]
    await kind.update(rt.conn, obj, paths)
    return "configured"


async def delete(
    rt: Runtime,
    kind: Kind | None,
    names: Sequence[str],
    *,
    files: Sequence[str],
    query: Query | None,
    ignore_missing: bool,
) -> Exit:
    outcome = Outcome(rt)
    targets: list[tuple[Kind, str, str]] = []
    if files:
        targets = [
            (d.kind, d.kind.name_of(d.message), d.kind.tenant_of(d.message) or rt.tenant) for d in documents(files)
        ]
    elif kind is not None and names:
        targets = [(kind, name, rt.tenant) for name in names]
    elif kind is not None and query is not None and query.selector:
        targets = [(kind, kind.name_of(o), kind.tenant_of(o)) for o in await kind.list(rt.conn, query)]
        if not targets:
            rt.warn(f"no {kind.plural} match {query.selector}")
    else:
        raise usage("name what to delete: TYPE NAME..., TYPE -l SELECTOR, or -f FILE")
    for k, name, tenant in targets:
        ref = f"{k.singular}/{name}"
        try:
            last = await k.delete(rt.conn, name, tenant, "")
        except CliError as err:
            if not (ignore_missing and err.exit_code == Exit.NOT_FOUND):
                outcome.fail(err, f"{ref}: ")
            continue
        rt.print(f"{ref} {_deleted(last)}")
    return outcome.code


def _deleted(last: Any) -> str:
    meta = getattr(last, "metadata", None)
    if meta is not None and meta.HasField("deletion_timestamp") and meta.finalizers:
        return f"marked for deletion (waiting for finalizers: {', '.join(meta.finalizers)})"
    return "deleted"


HEADER = """\
# Edit the object below and save it to update it; an unchanged file, or an empty one, changes
# nothing. Output-only fields (uid, timestamps, status) are ignored; resource_version makes the
# update fail if someone else changed the object meanwhile.
"""


async def edit(rt: Runtime, kind: Kind, name: str) -> Exit:
    if not kind.editable:
        raise kind.unsupported("edit")
    current = await kind.get(rt.conn, name, rt.tenant)
    original = HEADER + dump_yaml(to_dict(kind, current))
    fd, path = tempfile.mkstemp(prefix=f"tkectl-{kind.singular}-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(original)
    keep = False
    try:
        await _run_editor(path)
        edited = Path(path).read_text(encoding="utf-8")
        if edited == original or not _content(edited):
            rt.print("edit cancelled, no changes made")
            return Exit.OK
        try:
            docs = parse(edited, "the edited file")
        except CliError as err:
            keep = True
            raise usage(f"{err.message} (your changes are kept in {path})") from None
        if len(docs) != 1 or docs[0].kind is not kind or kind.name_of(docs[0].message) != kind.name_of(current):
            keep = True
            raise usage(f"the edited file must hold {kind.ref(current)} only (your changes are kept in {path})")
        obj: Message = docs[0].message
        if kind.tenanted:
            meta: Any = obj.metadata  # type: ignore[attr-defined]
            meta.tenant_id = meta.tenant_id or kind.tenant_of(current)
            meta.resource_version = meta.resource_version or kind.version_of(current)
        if kind.same(current, obj, kind.apply_paths) and kind.tenanted:
            rt.print(f"{kind.ref(current)} unchanged")
            return Exit.OK
        try:
            await kind.update(rt.conn, obj, ())
        except CliError:
            keep = True
            rt.warn(f"your changes are kept in {path}")
            raise
        rt.print(f"{kind.ref(current)} edited")
        return Exit.OK
    finally:
        if not keep:
            Path(path).unlink(missing_ok=True)


def _content(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


async def _run_editor(path: str) -> None:
    editor = os.environ.get("TKE_EDITOR") or os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    argv = [*shlex.split(editor), path]
    try:
        proc = await asyncio.create_subprocess_exec(*argv)
    except OSError as err:
        raise usage(f"cannot run the editor {argv[0]!r} (set $EDITOR): {err.strerror}") from None
    if await proc.wait() != 0:
        raise usage(f"the editor {argv[0]!r} exited with {proc.returncode}; nothing changed")
