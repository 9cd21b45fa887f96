"""The jsonl-file audit sink: every event once, in order, one JSON object per line; files
rotated by size at line boundaries, the rotated ones private too."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tke.internal.auth.audit import AuditEvent
from tke.plugins.audit.jsonl_file import JsonlFile


def event(i: int, reason: str = "") -> AuditEvent:
    return AuditEvent(time="2026-12-02T06:00:00.000+00:00", request_id=f"r{i}", method="/m", user="ü", reason=reason)


def read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_events_are_lines_in_order(tmp_path: Path) -> None:
    sink = JsonlFile(path=str(tmp_path / "audit.jsonl"))
    await sink.write([event(i) for i in range(3)])
    await sink.write([event(i) for i in range(3, 5)])
    await sink.close()
    assert [e["request_id"] for e in read(tmp_path / "audit.jsonl")] == [f"r{i}" for i in range(5)]


async def test_files_rotate_by_size_at_line_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"request_id":"before"}\n', encoding="utf-8")
    path.chmod(0o600)
    limit = 1000
    sink = JsonlFile(path=str(path), max_bytes=limit, backups=100)
    written = 0
    for batch in range(12):  # batches of different sizes, some lines with multi-byte text
        events = [event(written + i, reason="é" * (i * 7 % 50)) for i in range(batch % 5 + 1)]
        written += len(events)
        await sink.write(events)
    await sink.write([event(written, reason="x" * 2 * limit)])  # a line longer than a file: alone in one
    written += 1
    await sink.close()
    files = [*sorted(tmp_path.glob("audit.jsonl.*"), key=lambda p: -int(p.suffix[1:])), path]
    assert len(files) > 3
    ids = [e["request_id"] for f in files for e in read(f)]
    assert ids == ["before", *(f"r{i}" for i in range(written))]
    for f in files:
        size = f.stat().st_size
        assert size > 0, f"{f.name} is empty: an empty file was rotated"
        assert size < limit or len(read(f)) == 1, f"{f.name}: {size} bytes in {len(read(f))} lines"
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name
