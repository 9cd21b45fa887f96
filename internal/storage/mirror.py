"""A read-only, always-current copy of one key range in memory: list once, then follow the
store's watch. For small ranges read on every request (users, roles), so that the hot path
never waits for etcd.

Invariants: after `start` returns, the copy holds the range as of some revision and only moves
forward; a change is visible once the watch delivers it (milliseconds behind etcd); when the
history is compacted away the copy is rebuilt from a fresh list, never left with a gap.
Whoever derives something from the copy may follow it change by change: `on_change(key, before,
after)` runs as each change is applied (before or after None for a create or a delete), and
`on_reset()` after every full list (the start and a relist), when everything derived must be
rebuilt; both run on the event loop, before any reader can see the copy in between.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

from tke.internal.storage.store import Compacted, Event, EventType, Item, Store
from tke.internal.tasks import cancel_and_wait

log = logging.getLogger(__name__)

T = TypeVar("T")


class Follower(Protocol):
    """Something else kept from the same watch: it sees each full list, then every change."""

    def load(self, items: Iterable[Item], revision: int) -> None: ...

    def apply(self, event: Event) -> None: ...


class Followers:
    """Several followers of one watch (a range holding several kinds, each followed apart)."""

    def __init__(self, *followers: Follower) -> None:
        self.followers = followers

    def load(self, items: Iterable[Item], revision: int) -> None:
        listed = list(items)
        for follower in self.followers:
            follower.load(listed, revision)

    def apply(self, event: Event) -> None:
        for follower in self.followers:
            follower.apply(event)


class Mirror(Generic[T]):
    def __init__(
        self,
        store: Store,
        prefix: str,
        decode: Callable[[Item], T],
        *,
        on_change: Callable[[str, T | None, T | None], None] | None = None,
        on_reset: Callable[[], None] | None = None,
        follower: Follower | None = None,
    ) -> None:
        self.store = store
        self.follower = follower
        self.prefix = prefix
        self.decode = decode
        self.on_change = on_change
        self.on_reset = on_reset
        self.items: dict[str, T] = {}
        self.revision = 0
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        await self._relist()
        self._task = asyncio.create_task(self._follow(), name=f"mirror {self.prefix}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _relist(self) -> None:
        items: dict[str, T] = {}
        listed: list[Item] = []
        start, revision = self.prefix, 0
        while True:
            page = await self.store.list(self.prefix, start=start, limit=1000, revision=revision)
            revision = page.revision
            for item in page.items:
                items[item.key] = self.decode(item)
            if self.follower is not None:
                listed += page.items
            if not page.more:
                break
            start = page.items[-1].key + "\0"
        self.items, self.revision = items, revision
        if self.follower is not None:
            self.follower.load(listed, revision)
        if self.on_reset is not None:
            self.on_reset()

    def _apply(self, event: Event) -> None:
        if self.follower is not None:
            self.follower.apply(event)
        key = event.item.key
        self.revision = event.item.mod_revision
        before = self.items.get(key)
        after: T | None = None
        if event.type is EventType.DELETE:
            if before is None:
                return
            del self.items[key]
        else:
            try:
                after = self.items[key] = self.decode(event.item)
            except Exception:  # a record we cannot read must not stop the mirror
                log.exception("mirror %s: cannot decode %s", self.prefix, key)
                return
        if self.on_change is not None:
            self.on_change(key, before, after)

    async def _follow(self) -> None:
        while True:
            try:
                async for message in self.store.watch(self.prefix, after_revision=self.revision):
                    if isinstance(message, Event):
                        self._apply(message)
                    else:
                        self.revision = max(self.revision, message.revision)
                    async with self._changed:
                        self._changed.notify_all()
            except Compacted:
                log.warning("mirror %s fell behind compaction; listing again", self.prefix)
                await self._relist()

    async def wait_for(self, revision: int, within: float = 5.0) -> bool:
        """Wait until the copy includes `revision` (a write this process just made)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: self.revision >= revision)
        return True
