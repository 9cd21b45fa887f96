"""Process logging shared by the binaries: one line per record on stderr, as readable text
("console") or as JSON objects ("json") for log pipelines, with the request id of the gRPC call
being served when there is one.

The access log (one line per call of a server) is written in batches: its lines wait in memory
at most `FLUSH_WITHIN` seconds (a thread writes what gathered), so a busy server writes them in a
few writes instead of a system call per call. Every other line is written at once, with every
line before it, and logging's shutdown at exit writes the rest: only a process killed outright
loses the last moments' access lines. Each write is whole lines of at most `ATOMIC_WRITE` bytes
(a pipe takes a write that size in one piece), so the processes of `--workers` sharing one
stderr never cut into each other's lines.

A console line is one line whatever its message holds: messages carry what clients sent (a
name in a NOT_FOUND, a label selector), and a newline in one wrote a second line that looked
like the server's own (a forged access line), an escape sequence reached the terminal of whoever
tails the log. So the console format writes every character that is not printable (controls,
line and paragraph separators, bidirectional overrides) as its Python escape (`\\n`,
`\\x1b`, `\\u202e`). A traceback keeps its lines.

A JSON line (the "json" format, and the audit log's lines: `json_line`) holds only printable
characters too: every other one is written as its JSON escape (`\\u2028`). JSON itself
escapes only C0 controls; written as they came, C1 controls (`\\x9b` is CSI) reached the
terminal, bidirectional overrides reordered what an operator read, and NEL and the line and
paragraph separators split the line for every reader that splits as Python's `splitlines`
does, which made a client's name in a NOT_FOUND a second record (`{"level":"error",...}`)."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

# The request id of the gRPC call being served (set by the servers' request interceptor).
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

BATCHED = frozenset({"tke.access"})  # the loggers whose lines may wait (below WARNING)
FLUSH_WITHIN = 0.1  # seconds such a line may wait before it is written
ATOMIC_WRITE = 4096  # bytes: PIPE_BUF on Linux
MAX_WAITING_LINES = 10_000  # more are written at once, by the logger (bounded memory)


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class _SecondCache(logging.Formatter):
    """A formatter that formats each second's date and time once, not once per record."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._second: tuple[int, str | None] = (-1, None)
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        key = (int(record.created), datefmt)
        if key != self._second:
            self._second_text = time.strftime(datefmt or self.default_time_format, self.converter(record.created))
            self._second = key
        if datefmt or not self.default_msec_format:
            return self._second_text
        return self.default_msec_format % (self._second_text, record.msecs)


def printable(text: str) -> str:
    """`text` with each character that is not printable written as its escape (one line, no
    terminal control): "a\\nb" -> "a\\\\nb", "\\x1b[2J" -> "\\\\x1b[2J"."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def json_line(encoded: str) -> str:
    """`encoded` (JSON text) with each character that is not printable written as its JSON
    escape. Such a character can only stand inside a string (JSON's own syntax is ASCII), where
    its escape means the same character."""
    if encoded.isprintable():
        return encoded
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in encoded)


class ConsoleFormatter(_SecondCache):
    """Readable lines; the message is made `printable`, so one record is one line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


class JsonFormatter(_SecondCache):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if getattr(record, "request_id", ""):
            entry["request_id"] = record.request_id  # type: ignore[attr-defined]
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json_line(json.dumps(entry, ensure_ascii=False))


class BatchedStreamHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler whose lines of the `batched` loggers below WARNING are written within
    `flush_within` seconds by a thread (which sleeps while there is nothing to write), not one
    write per line; any other line is written at once, after those waiting."""

    def __init__(self, stream: TextIO, flush_within: float = FLUSH_WITHIN, batched: frozenset[str] = BATCHED) -> None:
        super().__init__(stream)
        self.flush_within = flush_within
        self.batched = batched
        self._lines: list[str] = []
        self._waiting = threading.Event()  # set while lines wait to be written
        threading.Thread(target=self._write_waiting, name="log writer", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        # (Handler.handle holds the handler's lock around emit, and flush takes it: a line is
        # never added while lines are written, and a stuck stderr blocks the loggers as before.)
        try:
            self._lines.append(self.format(record) + self.terminator)
            if (
                record.levelno >= logging.WARNING
                or record.name not in self.batched
                or len(self._lines) >= MAX_WAITING_LINES
            ):
                self.flush()
            elif not self._waiting.is_set():
                self._waiting.set()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.acquire()
        try:
            lines, self._lines = self._lines, []
            self._waiting.clear()
            for chunk in whole_lines(lines, ATOMIC_WRITE):
                self.stream.write(chunk)
                self.stream.flush()
        finally:
            self.release()

    def _write_waiting(self) -> None:
        while True:
            self._waiting.wait()
            time.sleep(self.flush_within)  # gather what comes meanwhile into the same writes
            # stderr closed or broken: these lines are lost; the thread goes on.
            with contextlib.suppress(OSError, ValueError):
                self.flush()


def whole_lines(lines: list[str], limit: int) -> Iterator[str]:
    """`lines` joined into chunks of at most `limit` bytes, in order, none cut (a longer line
    is a chunk of its own)."""
    chunk: list[str] = []
    size = 0
    for line in lines:
        n = len(line.encode("utf-8", "backslashreplace")) if not line.isascii() else len(line)
        if chunk and size + n > limit:
            yield "".join(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += n
    if chunk:
        yield "".join(chunk)


def setup(level: str = "info", fmt: str = "console") -> None:
    """Configure the root logger; `fmt` is "console" or "json"."""
    handler = BatchedStreamHandler(sys.stderr)
    handler.addFilter(_RequestId())
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = ConsoleFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # gRPC's own chatter is rarely what an operator needs.
    logging.getLogger("grpc").setLevel(logging.WARNING)
