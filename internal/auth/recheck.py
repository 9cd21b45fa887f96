"""Open streams checked again: a stream (Watch, WatchBatches) is authenticated and authorized when
it opens, and access can go while it is open (a Logout, a password change, a user disabled or
deleted, an API key deleted, a role binding removed, the token's expiry). StreamChecks keeps every
open authenticated stream and asks the auth step to check it again, as if it were opened now:

- every `interval` seconds at most, each stream at its own random point of a half interval
  (uniform in [interval/2, interval] after its last check), so that streams opened together, or
  all checked at once after a change, are not all checked together again;
- at once for the streams a change concerns, when an auth plugin says what changed
  (`changed(user=...)` for one user's credentials, `changed(tenant=...)` for a tenant's policy,
  `changed()` for everything): the built-in accounts and policy centre say so from their etcd
  mirrors, so a revocation ends the streams it concerns within the watch's delay on every
  apiserver. Other plugins (external services) are caught by the periodic check. Changes check
  a stream at most once per CHANGE_SPACING: a tenant rewriting its bindings in a loop costs at
  most one check of each of its streams a second, not one per write;
- by the credential's expiry (`Identity.expires_at`): the check runs then, so a stream never
  outlives its token.

Bounded: one heap entry per stream plus those of checks moved earlier by changes (rebuilt when
stale ones outnumber live ones), and at most CONCURRENT_CHECKS checks running at once, so
thousands of streams never mean thousands of authorizer calls in flight together. A check is
what the chain does at open (the authenticators, then the authorizers with their kept decisions),
never an etcd read for the built-in plugins.

A stream that fails its check is ended with the refusal (`end`): its task, when it waits for the
next response, is cancelled, and the auth step turns that cancellation into the refusal; a stream
busy handing a response to grpc ends before it takes the next one. A cancellation is sent only
while the task waits inside the response iterator, so it never lands in grpc's own sending.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tke.internal.auth.authn import Credentials
from tke.internal.auth.identity import Identity
from tke.internal.metrics import STREAM_CHECKS
from tke.internal.rpc import errors
from tke.internal.tasks import cancel_and_wait

log = logging.getLogger("tke.auth")

# Checks running at once (each an authenticate and an authorize, which may call a service).
CONCURRENT_CHECKS = 8
# Seconds between two checks of one stream that changes ask for (the first is at once).
CHANGE_SPACING = 1.0
# A check that found the credential still valid at its expiry (clocks a hair apart) runs again this soon.
_EXPIRY_RETRY = 0.05


@dataclass(frozen=True)
class Refusal:
    """Why a stream's check failed: the error to end it with, and the audit record's decision
    ("unauthenticated" or "deny") and reason."""

    error: errors.ApiError
    decision: str
    reason: str


@dataclass(eq=False)
class OpenStream:
    """One open stream: what it was opened with, and where its check stands."""

    method: str
    request: Any
    credentials: Credentials
    identity: Identity
    tenant: str  # the tenant its authorization was asked for ("*": every tenant)
    task: asyncio.Task[Any] | None = None
    due: float = 0.0  # loop time of its next check
    refusal: Refusal | None = None
    # The task awaits the next response: a cancellation lands in the handler, nowhere else.
    waiting: bool = False
    cancelled: bool = False  # StreamChecks cancelled the task to end it
    closed: bool = False
    changed_at: float = float("-inf")  # loop time of the last check a change asked for


Check = Callable[[OpenStream], Awaitable[Refusal | None]]


class StreamChecks:
    """The open streams of one server and their checks (see the module docstring)."""

    def __init__(self, check: Check, interval: float) -> None:
        if interval <= 0:
            raise ValueError("the re-check interval must be greater than 0")
        self.check = check
        self.interval = interval
        self._heap: list[tuple[float, int, OpenStream]] = []
        self._seq = itertools.count()
        self._streams: set[OpenStream] = set()
        self._by_user: dict[str, set[OpenStream]] = {}
        self._by_tenant: dict[str, set[OpenStream]] = {}
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(CONCURRENT_CHECKS)
        self._running: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        # Counters for tests and logs.
        self.checked = 0
        self.ended = 0

    @property
    def open(self) -> int:
        return len(self._streams)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stream checks")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        for task in list(self._running):
            await cancel_and_wait(task)

    def add(self, stream: OpenStream) -> None:
        self._streams.add(stream)
        self._by_user.setdefault(stream.identity.user, set()).add(stream)
        self._by_tenant.setdefault(stream.tenant, set()).add(stream)
        self._schedule(stream, self._next(stream, asyncio.get_running_loop().time()))

    def remove(self, stream: OpenStream) -> None:
        """The stream ended: forget it (its heap entries are skipped when they come up)."""
        if stream.closed:
            return
        stream.closed = True
        self._streams.discard(stream)
        for index, key in ((self._by_user, stream.identity.user), (self._by_tenant, stream.tenant)):
            group = index.get(key)
            if group is not None:
                group.discard(stream)
                if not group:
                    del index[key]

    def changed(self, *, user: str | None = None, tenant: str | None = None) -> None:
        """Access may have changed: for `user`'s streams, the streams authorized in `tenant`, or
        (neither named) every stream. They are checked now, or CHANGE_SPACING after the last
        check a change asked for (those due sooner are left as they are)."""
        if user is None and tenant is None:
            streams: set[OpenStream] = self._streams
        else:
            streams = set()
            if user is not None:
                streams |= self._by_user.get(user, set())
            if tenant is not None:
                streams |= self._by_tenant.get(tenant, set())
        if not streams:
            return
        now = asyncio.get_running_loop().time()
        for stream in list(streams):
            due = max(now, stream.changed_at + CHANGE_SPACING)
            if stream.due > due:
                stream.changed_at = due
                self._schedule(stream, due)

    def _next(self, stream: OpenStream, now: float) -> float:
        """When `stream` is checked next: within an interval, and by its credential's expiry."""
        due = now + self.interval * random.uniform(0.5, 1.0)
        expires = stream.identity.expires_at
        if expires is not None:
            at_expiry = now + (expires - time.time())
            due = min(due, max(at_expiry, now + _EXPIRY_RETRY))
        return due

    def _schedule(self, stream: OpenStream, due: float) -> None:
        stream.due = due
        heapq.heappush(self._heap, (due, next(self._seq), stream))
        if len(self._heap) > 2 * len(self._streams) + 64:
            # Entries of ended streams and of checks moved earlier: keep only the live ones.
            self._heap = [(s.due, next(self._seq), s) for s in self._streams]
            heapq.heapify(self._heap)
        if self._heap[0][2] is stream:
            self._wakeup.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wakeup.clear()
            now = loop.time()
            while self._heap and self._heap[0][0] <= now:
                due, _, stream = heapq.heappop(self._heap)
                if stream.closed or due != stream.due:
                    continue  # ended, or its check was moved
                stream.due = float("inf")  # being checked (a change meanwhile schedules another check)
                await self._slots.acquire()
                task = asyncio.create_task(self._check(stream), name=f"stream check {stream.method}")
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            timeout = self._heap[0][0] - loop.time() if self._heap else None
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    async def _check(self, stream: OpenStream) -> None:
        try:
            try:
                refusal = await self.check(stream)
            except Exception:  # a plugin's bug: fail closed, the client watches again
                log.exception("checking an open %s stream of %r failed", stream.method, stream.identity.user)
                error = errors.unavailable("the stream's access could not be checked again: watch again")
                refusal = Refusal(error, "error", "the check failed")
            self.checked += 1
            if stream.closed:
                return
            if refusal is None:
                STREAM_CHECKS.labels("allowed").inc()
                if stream.due == float("inf"):  # (else a change during the check has it checked again)
                    self._schedule(stream, self._next(stream, asyncio.get_running_loop().time()))
                return
            STREAM_CHECKS.labels("ended").inc()
            self.ended += 1
            self.end(stream, refusal)
        finally:
            self._slots.release()

    def end(self, stream: OpenStream, refusal: Refusal) -> None:
        """End `stream` with `refusal`: now if its task waits for a response, else before its next one."""
        stream.refusal = refusal
        self.remove(stream)
        if stream.waiting and stream.task is not None and not stream.cancelled:
            stream.cancelled = True
            stream.task.cancel()
