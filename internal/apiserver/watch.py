"""Watch fan-out: one etcd watch per kind, shared by every client watch of that kind.

A Hub follows its kind's key range from the store, decodes each change once, keeps the most
recent changes in a window, and hands them to subscribers, each with its own bounded queue.

Invariants:
- A subscriber receives every change after its start revision exactly once, in order, or its
  watch ends with an error that says why and where to resume; never a silent gap.
- A start revision older than the window is served by a catch-up watch on the store until it
  reaches the window, then joins the hub; one the store has compacted is OUT_OF_RANGE. The
  store holds a catch-up's unsent history in its own memory, so a catch-up runs only in a slot
  of its caller's (CatchupQuota, watch_quota.py), given back once the window is reached; a
  catch-up whose client takes no change for `catchup_stall` seconds ends (RESOURCE_EXHAUSTED
  and the revision to resume from), its slot and store watch given back at once.
- Memory is bounded in bytes, not only in changes. A change costs its stored bytes, its
  previous state's, and one encoding of it as a watch event, made once and shared by every
  watcher that gets it as that event type (`Change.size`, `Change.encoded`). The window
  keeps at most `window` changes and `window_bytes`; a subscriber that falls `queue_size`
  changes or `queue_bytes` behind is ended with RESOURCE_EXHAUSTED and the revision to resume
  from, and its backlog is dropped at once.
  Changes are shared between the window and every queue, so the hub holds at most the window
  plus, per key prefix being watched, one queue's allowance (queues are suffixes of the same
  stream), plus one message per stream in grpc's hands.
- If the hub's own watch fails for good (compaction during a long outage), every subscriber
  ends with OUT_OF_RANGE (relist) and the hub restarts from the current revision.
- With a watch cache (cache.py), the hub starts from a List of its range at one revision loaded
  into the cache, applies each change to the cache before offering it to anyone, and asks its
  etcd watch for a progress notification when a reader waits for the cache to catch up.
- With tenants' quotas (quota.py), the hub loads the range into the kind's usage likewise (with
  or without a cache) and applies each change to it, in the same order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from tke.internal.apiserver.cache import KindCache
from tke.internal.apiserver.quota import KindUsage
from tke.internal.metrics import WATCH_CLIENTS, WATCH_CLIENTS_ENDED_SLOW, WATCH_EVENTS, WATCH_WINDOW_BYTES
from tke.internal.rpc import errors
from tke.internal.storage.mirror import Follower
from tke.internal.storage.store import Compacted, Event, EventType, Item, Progress, Store, TooLarge, WatchMessage
from tke.internal.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_LOAD_PAGE = 1000  # objects per read while the cache loads

T = TypeVar("T")


@dataclass(eq=False)
class Change(Generic[T]):
    """One change, decoded once for all subscribers."""

    revision: int
    key: str
    deleted: bool
    obj: T  # the new state, or the last state for a delete
    _prev_value: bytes | None
    _decode: Callable[[Item], T]
    # Stored bytes of the new state (twice: it and its encoding as an event) and of the
    # previous state: what holding the change costs.
    size: int = 0
    _prev: T | None = None
    item: Item | None = None  # what etcd sent: the new state (the last one for a delete)
    _encoded: tuple[int, bytes] | None = None  # (event type, the event's bytes)

    def encoded(self, event_type: int, encode: Callable[[int, Item], bytes]) -> bytes:
        """The change as a watch event of `event_type`, encoded by `encode` once for every
        watcher (the first type asked for is kept; another one, rare, is encoded each time)."""
        assert self.item is not None
        if self._encoded is not None and self._encoded[0] == event_type:
            return self._encoded[1]
        out = encode(event_type, self.item)
        if self._encoded is None:
            self._encoded = (event_type, out)
        return out

    @property
    def existed(self) -> bool:
        """Whether the state before the change is known (not for a create, nor when etcd had
        compacted it)."""
        return self._prev_value is not None

    @property
    def prev(self) -> T | None:
        """The state before the change (None for a create), decoded on first use."""
        if self._prev is None and self._prev_value is not None:
            self._prev = self._decode(Item(self.key, self._prev_value, self.revision, 0))
        return self._prev


class Closed(Exception):
    """The subscription ended: `error` is the ApiError to end the client's stream with, or None
    for a clean end (server shutting down)."""

    def __init__(self, error: errors.ApiError | None) -> None:
        super().__init__(error.message if error else "closed")
        self.error = error


@dataclass(eq=False)
class Subscription(Generic[T]):
    key_prefix: str
    after: int  # deliver changes with revision > after
    queue_size: int
    queue_bytes: int = 1 << 62
    _queue: collections.deque[Change[T]] = field(default_factory=collections.deque)
    _bytes: int = 0  # of the changes in _queue
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _closed: Closed | None = None
    progress: int = 0  # the hub has seen everything up to here
    delivered: int = 0  # the revision of the last change taken from the queue

    def offer(self, change: Change[T], *, replay: bool = False) -> None:
        if self._closed is not None or change.revision <= self.after or not change.key.startswith(self.key_prefix):
            return
        if not replay and (len(self._queue) >= self.queue_size or self._bytes + change.size > self.queue_bytes):
            behind = (
                f"{self.queue_size} events"
                if len(self._queue) >= self.queue_size
                else f"{self.queue_bytes // 1024} KiB of changes"
            )
            resume = self.delivered
            # The backlog goes now, not when the client reads again (it may never).
            self._queue.clear()
            self._bytes = 0
            self.close(
                errors.resource_exhausted(
                    f"watch fell more than {behind} behind; watch again from resource_version {resume}",
                    reason="WATCH_TOO_SLOW",
                )
            )
            return
        self._queue.append(change)
        self._bytes += change.size
        self.after = change.revision
        self._wakeup.set()

    def advance(self, revision: int) -> None:
        self.progress = max(self.progress, revision)
        self._wakeup.set()

    def close(self, error: errors.ApiError | None) -> None:
        if self._closed is None:
            self._closed = Closed(error)
            self._wakeup.set()

    async def next(self, batch_bytes: int = 0) -> list[Change[T]]:
        """The next change; with `batch_bytes`, every queued change up to about that many
        stored bytes (at least one). Empty when only the progress moved. Raises Closed."""
        if not self._queue and self._closed is None:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._queue:
            out = [self._queue.popleft()]
            taken = out[0].size
            while batch_bytes and self._queue and taken + self._queue[0].size <= batch_bytes:
                out.append(self._queue.popleft())
                taken += out[-1].size
            self._bytes -= taken
            self.delivered = out[-1].revision
            return out
        if self._closed is not None:
            raise self._closed
        return []


async def _close(stream: AsyncIterator[object]) -> None:
    """Close `stream` now (an async generator: the store's watch ends), not when collected."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


class Hub(Generic[T]):
    """Fan-out of one key range (one kind) to many subscribers."""

    def __init__(
        self,
        store: Store,
        root: str,
        decode: Callable[[Item], T],
        *,
        window: int = 10_000,
        queue_size: int = 1_000,
        progress_interval: float = 5.0,
        window_bytes: int = 64 << 20,
        queue_bytes: int = 16 << 20,
        catchup_stall: float = 30.0,
        cache: KindCache | None = None,
        usage: KindUsage | None = None,
    ) -> None:
        self.store = store
        self.root = root
        self.kind = root.rstrip("/").rsplit("/", 1)[-1]
        self.decode = decode
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.progress_interval = progress_interval
        self.catchup_stall = catchup_stall
        self.window = window
        self.window_bytes = window_bytes
        self._window: collections.deque[Change[T]] = collections.deque()
        self._window_size = 0  # bytes of the changes in the window
        self._subs: set[Subscription[T]] = set()
        self._oldest = 0  # the hub holds every change with revision > _oldest
        self.revision = 0  # everything up to here has been seen
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopped = False
        self.cache = cache
        # What is kept from the range besides the window, each loaded at one revision and then
        # given every change in order (tke.internal.storage.mirror.Follower).
        self._followers: list[Follower] = [f for f in (cache, usage) if f is not None]
        self._progress_wanted = asyncio.Event()  # a reader waits for the cache: ask etcd now
        if cache is not None:
            cache.request_progress = self._progress_wanted.set

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"watch-hub {self.root}")
        await self._ready.wait()

    async def stop(self) -> None:
        self._stopped = True
        for sub in list(self._subs):
            sub.close(None)
            self.leave(sub)
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            start = await self._load() if self._followers else await self._current_revision()
            self._window.clear()
            self._window_size = 0
            self._oldest = self.revision = start
            self._ready.set()
            try:
                await self._follow(start)
            except Compacted as err:
                log.warning("watch of %s lost its history (%s); subscribers must relist", self.root, err)
                if self.cache is not None:
                    self.cache.unload()
                for sub in list(self._subs):
                    sub.close(errors.out_of_range("the watch's history was compacted: list again and watch from there"))
                    self.leave(sub)

    async def _current_revision(self) -> int:
        delay = 0.1
        while True:
            try:
                return await self.store.current_revision()
            except Exception as err:
                log.warning("watch of %s cannot read the current revision: %s", self.root, err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _load(self) -> int:
        """Read the whole range into the cache and the usage at one revision; that revision."""
        delay = 0.1
        while True:
            try:
                items: list[Item] = []
                start, revision, more, limit = self.root, 0, True, _LOAD_PAGE
                while more:
                    try:
                        page = await self.store.list(self.root, start=start, limit=limit, revision=revision)
                    except TooLarge:  # big objects: the answer was over the channel's limit
                        if limit == 1:
                            raise
                        limit = max(1, limit // 8)
                        continue
                    items += page.items
                    revision, more = page.revision, page.more
                    if page.items:
                        start = page.items[-1].key + "\0"
                for follower in self._followers:
                    follower.load(items, revision)
                return revision
            except Exception as err:  # etcd away, or the first page's revision compacted meanwhile
                log.warning("watch cache of %s cannot load: %s", self.root, err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _watch(self, prefix: str, after: int, wanted: asyncio.Event | None = None) -> AsyncIterator[WatchMessage]:
        """The store's watch, asking for progress every `progress_interval` (and when `wanted`
        is set) where the store takes such requests."""
        watch: Any = self.store.watch
        try:
            return cast(
                AsyncIterator[WatchMessage],
                watch(prefix, after_revision=after, progress_interval=self.progress_interval, progress_wanted=wanted),
            )
        except TypeError:  # stores without progress requests
            return self.store.watch(prefix, after_revision=after)

    async def _follow(self, start: int) -> None:
        self._progress_wanted.clear()
        stream = self._watch(self.root, start, self._progress_wanted)
        cache, followers = self.cache, self._followers
        async for message in stream:
            if isinstance(message, Progress):
                self.revision = max(self.revision, message.revision)
                if cache is not None:
                    cache.progress(message.revision)
                for sub in self._subs:
                    sub.advance(self.revision)
                continue
            for follower in followers:
                follower.apply(message)
            self._publish(self._change(message))

    def _change(self, event: Event) -> Change[T]:
        return Change(
            revision=event.item.mod_revision,
            key=event.item.key,
            deleted=event.type is EventType.DELETE,
            obj=self.decode(event.item),
            _prev_value=event.prev_value,
            _decode=self.decode,
            size=2 * len(event.item.value) + len(event.prev_value or b""),
            item=event.item,
        )

    def _publish(self, change: Change[T]) -> None:
        WATCH_EVENTS.labels(self.kind).inc()
        self._window.append(change)
        self._window_size += change.size
        while len(self._window) > self.window or (self._window_size > self.window_bytes and len(self._window) > 1):
            gone = self._window.popleft()
            self._window_size -= gone.size
            self._oldest = gone.revision
        WATCH_WINDOW_BYTES.labels(self.kind).set(self._window_size)
        self.revision = change.revision
        for sub in list(self._subs):
            sub.offer(change)
            if sub._closed is not None:
                WATCH_CLIENTS_ENDED_SLOW.labels(self.kind).inc()
                self.leave(sub)

    def covers(self, revision: int) -> bool:
        return revision >= self._oldest

    def _join(self, key_prefix: str, after: int) -> Subscription[T]:
        """Subscribe from `after`, which the window covers: replay the window, then live."""
        sub: Subscription[T] = Subscription(key_prefix, after, self.queue_size, self.queue_bytes, delivered=after)
        for change in self._window:
            sub.offer(change, replay=True)
        # The replayed backlog is bounded by the window and shared with the hub; only live
        # changes count against the client's allowance.
        sub.queue_size += len(sub._queue)
        sub.queue_bytes += sub._bytes
        sub.advance(self.revision)
        self._subs.add(sub)
        WATCH_CLIENTS.labels(self.kind).inc()
        return sub

    def leave(self, sub: Subscription[T]) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            WATCH_CLIENTS.labels(self.kind).dec()

    async def subscribe(
        self,
        key_prefix: str,
        after: int,
        batch_bytes: int = 0,
        catchup: Callable[[], AbstractContextManager[None]] | None = None,
    ) -> AsyncGenerator[list[Change[T]] | int, None]:
        """Changes under `key_prefix` after revision `after`, one at a time or, with
        `batch_bytes`, as many as are queued up to about that many stored bytes; now and then
        an int: the revision the watch has reached (for bookmarks). Raises Closed when it ends.
        `catchup`: a catch-up's slot, held while it reads the store's history (CatchupQuota);
        its ApiError, when no slot is free, ends the subscription before anything is read."""
        if self._stopped:
            raise Closed(None)  # the server is stopping: end cleanly, the client resumes elsewhere
        position = after
        if not self.covers(position):
            # Older than the window: read the store's history until the window is reached. The
            # slot (when `catchup` is given; it raises when none is free) and the store's watch
            # are released as soon as the window is reached, or the stream ends.
            loop = asyncio.get_running_loop()
            stalled: asyncio.Task[None] | None = None
            try:
                async with contextlib.AsyncExitStack() as held:
                    if catchup is not None:
                        held.enter_context(catchup())
                    history = self._watch(key_prefix, position)
                    held.push_async_callback(_close, history)

                    def stall() -> None:
                        # The client has not taken a change for catchup_stall seconds: give back
                        # the slot and the store's watch now (both idle: this generator and the
                        # store's wait at their yields), not when the client reads again.
                        nonlocal stalled
                        stalled = asyncio.create_task(held.aclose(), name=f"catch-up stall {key_prefix}")

                    async for message in history:
                        if isinstance(message, Progress):
                            position = max(position, message.revision)
                        else:
                            timer = loop.call_later(self.catchup_stall, stall)
                            try:
                                yield [self._change(message)]
                            finally:
                                timer.cancel()
                                if stalled is not None:
                                    await stalled
                            position = message.item.mod_revision
                            if stalled is not None:
                                raise Closed(
                                    errors.resource_exhausted(
                                        f"watch took no change for {self.catchup_stall:g}s while catching up from "
                                        f"etcd's history; watch again from resource_version {position}",
                                        reason="WATCH_TOO_SLOW",
                                    )
                                )
                        if self.covers(position):
                            break
            except Compacted:
                raise Closed(
                    errors.out_of_range(
                        f"resource_version {after} is too old (compacted): list again and watch from there"
                    )
                ) from None
        if self._stopped:
            raise Closed(None)
        sub = self._join(key_prefix, position)
        try:
            while True:
                changes = await sub.next(batch_bytes)
                yield changes if changes else sub.progress
        finally:
            self.leave(sub)
