"""The binaries' log handler: lines below WARNING are written in batches, a WARNING at once
with everything before it; and the time stamps of the formatters are the standard ones."""

from __future__ import annotations

import io
import logging
import os
import select
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


def logger_on(handler: logging.Handler, name: str) -> logging.Logger:
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger(f"test_logs.{name}")
    log.propagate = False
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG)
    return log


def test_info_lines_wait_and_a_warning_takes_them_along(pipe: tuple[int, io.TextIOWrapper]) -> None:
    read_end, stream = pipe
    log = logger_on(logs.BatchedStreamHandler(stream, flush_within=3600), "warn")
    log.info("one")
    log.info("two")
    assert not readable(read_end), "an INFO line was written at once"
    log.warning("three")
    assert readable(read_end), "a WARNING was not written at once"
    assert os.read(read_end, 1 << 16).decode() == "INFO one\nINFO two\nWARNING three\n"


def test_info_lines_are_written_within_the_delay(pipe: tuple[int, io.TextIOWrapper]) -> None:
    read_end, stream = pipe
    log = logger_on(logs.BatchedStreamHandler(stream, flush_within=0.05), "delay")
    for round_ in range(3):  # the writer thread sleeps between batches and wakes for the next
        log.info("line %d", round_)
        assert readable(read_end, within=10), f"round {round_}: the line was not written"
        assert os.read(read_end, 1 << 16).decode() == f"INFO line {round_}\n"


def test_flush_writes_what_waits(pipe: tuple[int, io.TextIOWrapper]) -> None:
    """logging.shutdown (at exit) flushes every handler: nothing logged is lost."""
    read_end, stream = pipe
    handler = logs.BatchedStreamHandler(stream, flush_within=3600)
    logger_on(handler, "flush").info("last words")
    handler.flush()
    assert os.read(read_end, 1 << 16).decode() == "INFO last words\n"


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
    log = logger_on(logs.BatchedStreamHandler(stream, flush_within=3600), "bound")
    log.info("a")
    log.info("b")
    assert not readable(read_end)
    log.info("c")
    assert readable(read_end), "the waiting lines were not bounded"
    assert os.read(read_end, 1 << 16).decode() == "INFO a\nINFO b\nINFO c\n"


def test_writes_are_whole_lines_that_a_pipe_takes_in_one_piece() -> None:
    lines = [f"{i:04d} " + "x" * (i % 300) + "\n" for i in range(500)] + ["é" * 3000 + "\n", "y" * 5000 + "\n", "z\n"]
    chunks = list(logs.whole_lines(lines, 4096))
    assert "".join(chunks) == "".join(lines)
    for chunk in chunks:
        assert chunk.endswith("\n")
        assert len(chunk.encode()) <= 4096 or chunk.count("\n") == 1, "a chunk over the limit holds more than a line"
    assert len(chunks) < len(lines) / 10
