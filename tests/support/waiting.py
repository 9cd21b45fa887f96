"""Waiting on a condition instead of sleeping and hoping: the tests' one polling helper, for
coroutines (`wait_for`) and for plain code (`wait_until`, for subprocess-driven tests),
`Lines`, to wait for what a child process prints, and `bounded`, for a long scenario that
must say where it hung.

Tests run on a loaded 2-core machine next to other suites, so the default limit is generous:
a passing test returns as soon as its condition holds, and only a broken one waits it out.
The failure message carries the condition's last value, to say what was seen instead."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO, TypeVar, overload

T = TypeVar("T")

WITHIN = 30.0  # seconds: far above any condition's normal time, so only a real bug runs out of it


@overload
async def wait_for(
    predicate: Callable[[], Awaitable[T | None]], within: float = ..., interval: float = ..., what: str = ...
) -> T: ...


@overload
async def wait_for(
    predicate: Callable[[], T | None], within: float = ..., interval: float = ..., what: str = ...
) -> T: ...


async def wait_for(
    predicate: Callable[[], object], within: float = WITHIN, interval: float = 0.05, what: str = "condition"
) -> object:
    """Poll `predicate` (a plain or a coroutine function) until it returns something truthy;
    return that. Fails with AssertionError after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        last = predicate()
        if inspect.isawaitable(last):
            # A check that hangs (a call that never answers) fails here, naming the condition,
            # instead of running into the test's own timeout with nothing said. One that starts
            # at the deadline still gets a fair time (a call on a loaded machine).
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), min(within, 5.0))):
                    last = await last
            except TimeoutError:
                raise AssertionError(f"{what}: a check did not return within {within}s") from None
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {within}s (last: {last!r})")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def bounded(seconds: float, what: str) -> AsyncIterator[None]:
    """Fail with every asyncio task's stack when `what` takes more than `seconds`: a test that
    hangs says where, instead of running into pytest's timeout with only the threads' stacks
    (which show an idle event loop). The stacks are taken when the time is up, before the
    cancellation unwinds them."""
    loop = asyncio.get_running_loop()
    stacks = io.StringIO()
    try:
        async with asyncio.timeout(None) as deadline:

            def expire() -> None:
                try:
                    for task in asyncio.all_tasks():
                        print(f"--- task {task.get_name()}", file=stacks)
                        try:
                            task.print_stack(file=stacks)
                        except Exception as err:  # a task of compiled code (grpc's) has no frames
                            print(f"(no stack: {err!r})", file=stacks)
                finally:
                    deadline.reschedule(loop.time())

            timer = loop.call_later(seconds, expire)
            try:
                yield
            finally:
                timer.cancel()
    except TimeoutError:
        if not stacks.getvalue():
            raise
        raise AssertionError(f"{what} took more than {seconds}s; the tasks then:\n{stacks.getvalue()}") from None


def wait_until(
    predicate: Callable[[], T | None], within: float = WITHIN, interval: float = 0.05, what: str = "condition"
) -> T:
    """`wait_for` for plain code: blocks the calling thread between polls."""
    deadline = time.monotonic() + within
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {within}s (last: {last!r})")
        time.sleep(interval)


class Lines:
    """The lines a child process writes to a pipe, read by a thread as they come, so a test
    can wait for the next one (or one it is looking for) with a limit instead of blocking
    forever on a child that went quiet."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)  # the end of the stream

    def next(self, within: float = WITHIN, matching: Callable[[str], bool] = lambda _: True) -> str:
        """The next line for which `matching` holds; earlier lines are passed over."""
        deadline = time.monotonic() + within
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no such line within {within}s; lines seen: {self.seen}") from None
            if line is None:
                self._queue.put(None)
                raise AssertionError(f"the stream ended; lines seen: {self.seen}")
            self.seen.append(line)
            if matching(line):
                return line

    def rest(self, within: float = WITHIN) -> list[str]:
        """Every line still to come, once the stream has ended (the process exited)."""
        self._thread.join(within)
        assert not self._thread.is_alive(), f"the stream did not end within {within}s"
        out: list[str] = []
        while (line := self._queue.get_nowait()) is not None:
            out.append(line)
        self._queue.put(None)
        self.seen += out
        return out
