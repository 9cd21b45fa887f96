"""A work queue of object keys, as Kubernetes' client-go has it.

Invariants:
- A key is queued at most once however many times it is added (dedupe).
- A key handed to a worker is not handed to another until that worker calls `done`; adds
  meanwhile are remembered and the key is queued again after `done` (never lost, never run
  twice at the same time).
- `add_after` delays an add; several delayed adds of one key keep the earliest.
- `retry` adds after the key's exponential backoff; `forget` resets it after a success.
"""

from __future__ import annotations

import asyncio
import collections

from tke.internal.controller.backoff import Backoff


class ShutDown(Exception):
    """The queue is shut down; workers should exit."""


class WorkQueue:
    def __init__(self, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff()
        self._queue: collections.deque[str] = collections.deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._ready = asyncio.Condition()
        self._shut = False
        self.adds = 0  # every add call, for tests and metrics

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def processing(self) -> frozenset[str]:
        return frozenset(self._processing)

    def add(self, key: str) -> None:
        self.adds += 1
        if self._shut or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._ready:
            self._ready.notify()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        current = self._timers.get(key)
        if current is not None:
            if current[0] <= when:
                return
            current[1].cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def retry(self, key: str) -> float:
        """Add `key` again after its backoff; returns the delay."""
        delay = self.backoff.next_delay(key)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        self.backoff.forget(key)

    async def get(self) -> str:
        async with self._ready:
            while not self._queue:
                if self._shut:
                    raise ShutDown
                await self._ready.wait()
            key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty and not self._shut:
            self._queue.append(key)
            asyncio.get_running_loop().create_task(self._wake())

    async def shutdown(self) -> None:
        self._shut = True
        for _, timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        async with self._ready:
            self._ready.notify_all()
