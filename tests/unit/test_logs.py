"""The binaries' log handler: the access log's lines below WARNING are written in batches, any
other line at once with everything before it; the time stamps of the formatters are the
standard ones; and a console line is one line, whatever a client's text in it holds."""

from __future__ import annotations

import io
import json
import logging
import os
import select
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tke.internal import logs


@pytest.fixture
def pipe() -> Iterator[tuple[int, io.TextIOWrapper]]:
    """A pipe's read end, and its write end as a buffered text stream."""
    read_end, write_end = os.pipe()
    stream = io.TextIOWrapper(open(write_end, "wb", buffering=1 << 16), encoding="utf-8")  # noqa: SIM115
    try:
        yield read_end, stream
    finally:
        stream.close()
        os.close(read_end)


def readable(fd: int, within: float = 0.0) -> bool:
    return bool(select.select([fd], [], [], within)[0])


def batched(stream: io.TextIOWrapper, name: str, flush_within: float) -> logs.BatchedStreamHandler:
    return logs.BatchedStreamHandler(stream, flush_within=flush_within, batched=frozenset({f"test_logs.{name}"}))


def logger_on(handler: logging.Handler, name: str) -> logging.Logger:
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    log = logging.getLogger(f"test_logs.{name}")
    log.propagate = False
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG)
    return log


def test_info_lines_wait_and_a_warning_takes_them_along(pipe: tuple[int, io.TextIOWrapper]) -> None:
    read_end, stream = pipe
    log = logger_on(batched(stream, "warn", 3600), "warn")
    log.info("one")
    log.info("two")
    assert not readable(read_end), "an INFO line was written at once"
    log.warning("three")
    assert readable(read_end), "a WARNING was not written at once"
    lines = ["test_logs.warn INFO one", "test_logs.warn INFO two", "test_logs.warn WARNING three"]
    assert os.read(read_end, 1 << 16).decode().splitlines() == lines


def test_info_lines_are_written_within_the_delay(pipe: tuple[int, io.TextIOWrapper]) -> None:
    read_end, stream = pipe
    log = logger_on(batched(stream, "delay", 0.05), "delay")
    for round_ in range(3):  # the writer thread sleeps between batches and wakes for the next
        log.info("line %d", round_)
        assert readable(read_end, within=10), f"round {round_}: the line was not written"
        assert os.read(read_end, 1 << 16).decode() == f"test_logs.delay INFO line {round_}\n"


def test_a_line_of_another_logger_is_written_at_once_after_the_waiting_ones(
    pipe: tuple[int, io.TextIOWrapper],
) -> None:
    """Start-up lines, errors, a controller's progress: only the access log may wait (a process
    killed outright loses at most its last access lines)."""
    read_end, stream = pipe
    handler = batched(stream, "busy", 3600)
    logger_on(handler, "busy").info("waits")
    assert not readable(read_end)
    logger_on(handler, "other").info("at once")
    assert readable(read_end)
    assert os.read(read_end, 1 << 16).decode() == "test_logs.busy INFO waits\ntest_logs.other INFO at once\n"


def test_flush_writes_what_waits(pipe: tuple[int, io.TextIOWrapper]) -> None:
    """logging.shutdown (at exit) flushes every handler: nothing logged is lost."""
    read_end, stream = pipe
    handler = batched(stream, "flush", 3600)
    logger_on(handler, "flush").info("last words")
    handler.flush()
    assert os.read(read_end, 1 << 16).decode() == "test_logs.flush INFO last words\n"


@pytest.mark.parametrize("datefmt", [None, "%Y-%m-%dT%H:%M:%S"])
def test_time_stamps_are_the_standard_formatters(datefmt: str | None) -> None:
    cached, standard = logs._SecondCache(), logging.Formatter()
    cached.converter = standard.converter = time.gmtime
    now = time.time()
    for created in (now, now + 0.25, now + 1.5, now + 1.75, now - 86400, now):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert cached.formatTime(record, datefmt) == standard.formatTime(record, datefmt)


def test_too_many_waiting_lines_are_written_at_once(
    pipe: tuple[int, io.TextIOWrapper], monkeypatch: pytest.MonkeyPatch
) -> None:
    read_end, stream = pipe
    monkeypatch.setattr(logs, "MAX_WAITING_LINES", 3)
    log = logger_on(batched(stream, "bound", 3600), "bound")
    log.info("a")
    log.info("b")
    assert not readable(read_end)
    log.info("c")
    assert readable(read_end), "the waiting lines were not bounded"
    assert os.read(read_end, 1 << 16).decode() == "".join(f"test_logs.bound INFO {x}\n" for x in "abc")


def test_writes_are_whole_lines_that_a_pipe_takes_in_one_piece() -> None:
    lines = [f"{i:04d} " + "x" * (i % 300) + "\n" for i in range(500)] + ["é" * 3000 + "\n", "y" * 5000 + "\n", "z\n"]
    chunks = list(logs.whole_lines(lines, 4096))
    assert "".join(chunks) == "".join(lines)
    for chunk in chunks:
        assert chunk.endswith("\n")
        assert len(chunk.encode()) <= 4096 or chunk.count("\n") == 1, "a chunk over the limit holds more than a line"
    assert len(chunks) < len(lines) / 10


def test_the_writer_goes_on_when_a_write_fails(pipe: tuple[int, io.TextIOWrapper]) -> None:
    read_end, stream = pipe
    failed = threading.Event()

    class Failing(io.StringIO):
        def write(self, text: str) -> int:
            failed.set()
            raise BrokenPipeError("stderr is gone")

    handler = batched(Failing(), "broken", 0.01)  # type: ignore[arg-type]
    log = logger_on(handler, "broken")
    log.info("lost")
    assert failed.wait(10), "the writer thread did not write"
    handler.setStream(stream)  # stderr works again
    log.info("written")
    assert readable(read_end, within=10), "the writer thread stopped after a failed write"
    assert os.read(read_end, 1 << 16).decode() == "test_logs.broken INFO written\n"


@pytest.fixture
def console_formatter() -> Iterator[logging.Formatter]:
    """The formatter `logs.setup` gives the console format (the root logger restored after)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.setup("info", "console")
        formatter = root.handlers[0].formatter
        assert formatter is not None
        yield formatter
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_a_console_line_is_one_line_whatever_a_client_sent(console_formatter: logging.Formatter) -> None:
    # What a tenant sent as a cluster name, repeated by a NOT_FOUND in the access log: a newline
    # forged a second access line, escapes reached the terminal of whoever tails the log.
    name = "zz\n2026-12-02 16:00:00,000 INFO tke.access: 0 /tke.auth.v1.AuthService/Login OK\x1b[2J\u202e\u2028\x00"
    record = logging.LogRecord("tke.access", logging.INFO, __file__, 1, 'cluster "%s" not found', (name,), None)
    line = console_formatter.format(record)
    assert line.endswith(
        'cluster "zz\\n2026-12-02 16:00:00,000 INFO tke.access: 0 /tke.auth.v1.AuthService/Login OK'
        '\\x1b[2J\\u202e\\u2028\\x00" not found'
    )
    assert line.isprintable()
    plain = logging.LogRecord("tke.access", logging.INFO, __file__, 1, "plain é ü text", None, None)
    assert console_formatter.format(plain).endswith(" INFO tke.access: plain é ü text")


def test_a_traceback_keeps_its_lines(console_formatter: logging.Formatter) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed\n", None, sys.exc_info())
    lines = console_formatter.format(record).splitlines()
    assert lines[0].endswith("ERROR x: failed\\n")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: boom"


def test_a_json_line_is_one_printable_line_whatever_a_client_sent() -> None:
    # JSON escapes only C0 controls: a line separator or NEL split the line for readers that
    # split as Python does (a forged second record), C1 controls and bidi overrides reached the
    # terminal of whoever tails the log.
    name = 'x\u2028{"level":"error","msg":"forged"}\x85y\u202ez\x9b2J\U000e0001'
    record = logging.LogRecord("tke.access", logging.INFO, __file__, 1, 'cluster "%s" not found', (name,), None)
    line = logs.JsonFormatter().format(record)
    assert line.isprintable() and line.splitlines() == [line]
    assert json.loads(line)["msg"] == f'cluster "{name}" not found'
    assert '\\u2028{\\"level\\"' in line and "\\u0085" in line and "\\u202e" in line and "\\udb40\\udc01" in line
    plain = logging.LogRecord("tke.access", logging.INFO, __file__, 1, "plain é ü text", None, None)
    assert json.loads(logs.JsonFormatter().format(plain))["msg"] == "plain é ü text"
    assert "é ü" in logs.JsonFormatter().format(plain)
