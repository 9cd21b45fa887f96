"""Waiting on a condition instead of sleeping and hoping: the tests' one polling helper, for
coroutines (`wait_for`) and for plain code (`wait_until`, for subprocess-driven tests).

Tests run on a loaded 2-core machine next to other suites, so the default limit is generous:
a passing test returns as soon as its condition holds, and only a broken one waits it out.
The failure message carries the condition's last value, to say what was seen instead."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

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
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {within}s (last: {last!r})")
        await asyncio.sleep(interval)


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
