"""Audit events as JSON lines in a file, rotated by size (the standard library's
RotatingFileHandler). The default audit sink. Entry point `jsonl-file` of `tke.audit`; options
`path`, `max_bytes` (default 100 MiB), `backups` (default 5).

Audit files say who did what: they are created for their owner only (0600), whatever the
process's umask, and rotated files keep that mode. A file that exists keeps the mode an
operator gave it (0640 for a log reader's group, say).

Each line holds printable characters only (`logs.json_line`): what a caller sent (a name, a
user name tried at login) cannot split a line or drive the terminal of whoever reads it."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tke.internal.auth.audit import AuditEvent
from tke.internal.logs import json_line

FILE_MODE = 0o600

# One encoder for every line: json.dumps with options builds a new one per call.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    def _open(self) -> Any:
        # O_APPEND as the handler's own mode "a"; the mode applies when the file is created.
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


class JsonlFile:
    def __init__(self, context: Any = None, *, path: str, max_bytes: int = 100 * 1024 * 1024, backups: int = 5) -> None:
        Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._handler = _PrivateRotatingFile(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))

    def _write(self, lines: list[str]) -> None:
        # One write and one flush per batch, instead of a log record, a formatting, a flush and
        # two stat calls per line; the file rotates exactly where the handler's emit would
        # rotate it: before a line that would take it to max_bytes (only a regular file).
        h = self._handler
        h.acquire()
        try:
            if h.stream is None:
                h.stream = h._open()
            rotates = h.maxBytes > 0 and os.path.isfile(h.baseFilename)
            size = h.stream.tell()
            chunk: list[str] = []
            for line in lines:
                record = line + "\n"
                if rotates and size + len(record) >= h.maxBytes:
                    if chunk:
                        h.stream.write("".join(chunk))
                        chunk = []
                    h.doRollover()
                    size = h.stream.tell() if h.stream is not None else 0
                chunk.append(record)
                size += len(record.encode("utf-8"))
            if chunk:
                h.stream.write("".join(chunk))
            h.stream.flush()
        finally:
            h.release()

    async def write(self, events: Sequence[AuditEvent]) -> None:
        # Only printable characters (logs.json_line): a name a client sent with a line separator
        # or a terminal control is one line still, and reaches no terminal.
        lines = [json_line(_encode(e.to_dict())) for e in events]
        # File I/O off the event loop: a slow disk must not stall requests.
        await asyncio.to_thread(self._write, lines)

    async def close(self) -> None:
        self._handler.close()
