"""A work queue of object keys, as Kubernetes' client-go has it.

Invariants:
- A key is queued at most once however many times it is added (dedupe).
- A key handed to a worker is not handed to another until that worker calls `done`; adds
  meanwhile are remembered and the key is queued again after `done` (never lost, never run
  twice at the same time).
- `add_after` delays an add; several delayed adds of one key keep the earliest.
- `retry` adds after the key's exponential backoff; `forget` resets it after a success.
- Tenants take turns: keys ("tenant/name") are handed out one tenant after the other, each
  tenant's in the order added. With a `tenant_share`, one tenant's keys are handed out at most
  that many at a time; its other keys wait, in order, while other tenants' keys pass them.
  A tenant's objects reach what the tenant controls (their machines, their clusters' API
  servers), which can make every reconcile last as long as its time limits allow: without a
  share, one tenant's slow machines took every worker and no other tenant's object moved.
"""

from __future__ import annotations

import asyncio
import collections

from tke.internal.controller.backoff import Backoff


class ShutDown(Exception):
    """The queue is shut down; workers should exit."""


class WorkQueue:
    def __init__(self, backoff: Backoff | None = None, tenant_share: int = 0) -> None:
        self.backoff = backoff or Backoff()
        # Keys of one tenant handed out at once; 0: no limit.
        self.tenant_share = tenant_share
        self._busy: collections.Counter[str] = collections.Counter()
        # Queued keys by tenant, each in the order added, and the tenants that have queued keys
        # in the order they are served: a get takes the first key of the first tenant below its
        # share, and that tenant goes to the back. So a tenant with many queued keys delays no
        # other tenant's key by more than one key a turn, and finding a key costs a look at the
        # tenants with queued keys, never a walk over every queued key.
        self._queues: dict[str, collections.deque[str]] = {}
        self._turns: collections.deque[str] = collections.deque()
        self._queued = 0
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        # Workers blocked in get(), woken one per queued key.
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._shut = False
        self.adds = 0  # every add call, for tests and metrics

    def __len__(self) -> int:
        return self._queued

    @property
    def processing(self) -> frozenset[str]:
        return frozenset(self._processing)

    def add(self, key: str) -> None:
        self.adds += 1
        if self._shut or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._push(key)

    def _push(self, key: str) -> None:
        tenant = _tenant(key)
        keys = self._queues.get(tenant)
        if keys is None:
            keys = self._queues[tenant] = collections.deque()
            self._turns.append(tenant)
        keys.append(key)
        self._queued += 1
        self._push_wake()

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
        while (key := self._take()) is None:
            if self._shut:
                raise ShutDown
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Pass a wake-up meant for us on to another worker.
                if waiter.done() and not waiter.cancelled() and self._queued:
                    self._push_wake()
                raise
        self._processing.add(key)
        self._busy[_tenant(key)] += 1
        self._dirty.discard(key)
        return key

    def _take(self) -> str | None:
        """The next key that may be handed out, taken off the queue; None when there is none."""
        for _ in range(len(self._turns)):
            tenant = self._turns[0]
            self._turns.rotate(-1)  # this tenant's turn is over, whether or not it takes a key
            if self.tenant_share and self._busy[tenant] >= self.tenant_share:
                continue
            keys = self._queues[tenant]
            key = keys.popleft()
            self._queued -= 1
            if not keys:
                del self._queues[tenant]
                self._turns.pop()  # it went to the back just now
            return key
        return None

    def done(self, key: str) -> None:
        if key not in self._processing:
            return
        self._processing.discard(key)
        tenant = _tenant(key)
        self._busy[tenant] -= 1
        if not self._busy[tenant]:
            del self._busy[tenant]
        if key in self._dirty and not self._shut:
            self._push(key)
        elif self.tenant_share and self._queued:
            self._push_wake()  # the tenant's waiting keys may go now

    def _push_wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def shutdown(self) -> None:
        self._shut = True
        for _, timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)


def _tenant(key: str) -> str:
    return key.partition("/")[0]
