"""Audit events as JSON lines in a file, rotated by size (the standard library's
RotatingFileHandler). The default audit sink. Entry point `jsonl-file` of `tke.audit`; options
`path`, `max_bytes` (default 100 MiB), `backups` (default 5)."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tke.internal.auth.audit import AuditEvent


class JsonlFile:
    def __init__(self, context: Any = None, *, path: str, max_bytes: int = 100 * 1024 * 1024, backups: int = 5) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))

    def _write(self, lines: list[str]) -> None:
        for line in lines:
            self._handler.emit(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
        self._handler.flush()

    async def write(self, events: Sequence[AuditEvent]) -> None:
        lines = [json.dumps(e.to_dict(), separators=(",", ":"), ensure_ascii=False) for e in events]
        # File I/O off the event loop: a slow disk must not stall requests.
        await asyncio.to_thread(self._write, lines)

    async def close(self) -> None:
        self._handler.close()
