"""An in-memory Store: the fake of the storage contract for unit tests of pure logic.

It keeps the full history (until `compact`), so watches from any kept revision behave like
etcd's. Single event loop only; not for production.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import itertools
import time
from collections.abc import AsyncIterator, Sequence

from tke.internal.storage.lease import LeaseExpired
from tke.internal.storage.store import (
    AlreadyExists,
    Compacted,
    Conflict,
    Event,
    EventType,
    Guard,
    Item,
    NotFound,
    Page,
    PreconditionFailed,
    WatchMessage,
)


class MemoryStore:
    def __init__(self) -> None:
        self._items: dict[str, Item] = {}
        self._keys: list[str] = []  # sorted
        self._revision = 1
        self._history: list[Event] = []
        self._compacted = 0
        self._changed = asyncio.Condition()
        # Leases: id -> (ttl, expiry on the monotonic clock), and the keys bound to each.
        self._leases: dict[int, tuple[int, float]] = {}
        self._lease_keys: dict[int, set[str]] = {}
        self._lease_ids = itertools.count(0x1000)

    async def close(self) -> None:
        return None

    async def _record(self, event: Event) -> None:
        self._history.append(event)
        async with self._changed:
            self._changed.notify_all()

    async def create(self, key: str, value: bytes, *, guards: Sequence[Guard] = (), lease: int = 0) -> Item:
        await self._expire()
        self._check_lease(lease)
        if key in self._items:
            raise AlreadyExists(key)
        for g in guards:
            current = self._items.get(g.key)
            if current is None or current.mod_revision != g.mod_revision:
                raise PreconditionFailed(g)
        self._revision += 1
        item = Item(key, value, self._revision, self._revision)
        self._items[key] = item
        bisect.insort(self._keys, key)
        self._bind(key, lease)
        await self._record(Event(EventType.PUT, item, None))
        return item

    async def get(self, key: str) -> Item:
        await self._expire()
        try:
            return self._items[key]
        except KeyError:
            raise NotFound(key) from None

    async def list(self, prefix: str, *, start: str = "", limit: int = 0, revision: int = 0) -> Page:
        await self._expire()
        if revision and revision < self._compacted:
            raise Compacted(revision, self._compacted)
        if revision and revision != self._revision:
            items = self._state_at(prefix, revision)
        else:
            items = [self._items[k] for k in self._keys if k.startswith(prefix)]
        items = [i for i in items if i.key >= (start or prefix)]
        more = bool(limit) and len(items) > limit
        if limit:
            items = items[:limit]
        return Page(items=items, revision=revision or self._revision, more=more)

    def _state_at(self, prefix: str, revision: int) -> builtins.list[Item]:
        state: dict[str, Item] = {}
        for ev in self._history:
            if ev.item.mod_revision > revision:
                break
            if not ev.item.key.startswith(prefix):
                continue
            if ev.type is EventType.PUT:
                state[ev.item.key] = ev.item
            else:
                state.pop(ev.item.key, None)
        return [state[k] for k in sorted(state)]

    async def update(self, key: str, value: bytes, *, expected_revision: int, lease: int = 0) -> Item:
        current = await self.get(key)
        self._check_lease(lease)
        if current.mod_revision != expected_revision:
            raise Conflict(key, current)
        self._revision += 1
        item = Item(key, value, self._revision, current.create_revision)
        self._items[key] = item
        self._bind(key, lease)
        await self._record(Event(EventType.PUT, item, current.value))
        return item

    async def delete(self, key: str, *, expected_revision: int) -> int:
        current = await self.get(key)
        if current.mod_revision != expected_revision:
            raise Conflict(key, current)
        return await self._remove(current)

    async def _remove(self, current: Item) -> int:
        key = current.key
        self._revision += 1
        del self._items[key]
        self._keys.remove(key)
        self._bind(key, 0)
        gone = Item(key, current.value, self._revision, current.create_revision)
        await self._record(Event(EventType.DELETE, gone, current.value))
        return self._revision

    # -- leases -----------------------------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        lease = next(self._lease_ids)
        ttl = max(1, int(ttl))
        self._leases[lease] = (ttl, time.monotonic() + ttl)
        self._lease_keys[lease] = set()
        return lease

    async def keep_alive(self, lease: int) -> int:
        await self._expire()
        if lease not in self._leases:
            raise LeaseExpired(lease)
        ttl, _ = self._leases[lease]
        self._leases[lease] = (ttl, time.monotonic() + ttl)
        return ttl

    async def revoke(self, lease: int) -> None:
        self._leases.pop(lease, None)
        for key in sorted(self._lease_keys.pop(lease, set())):
            if key in self._items:
                await self._remove(self._items[key])

    def _check_lease(self, lease: int) -> None:
        if lease and lease not in self._leases:
            raise LeaseExpired(lease)

    def _bind(self, key: str, lease: int) -> None:
        for keys in self._lease_keys.values():
            keys.discard(key)
        if lease:
            self._lease_keys[lease].add(key)

    async def _expire(self) -> None:
        """Leases expire when an operation notices (the fake has no timer of its own)."""
        now = time.monotonic()
        for lease in [lease for lease, (_, expiry) in self._leases.items() if expiry <= now]:
            await self.revoke(lease)

    async def current_revision(self) -> int:
        return self._revision

    async def compact(self, revision: int) -> None:
        self._compacted = revision
        self._history = [e for e in self._history if e.item.mod_revision >= revision]

    async def watch(self, prefix: str, *, after_revision: int) -> AsyncIterator[WatchMessage]:
        if after_revision + 1 < self._compacted:
            raise Compacted(after_revision + 1, self._compacted)
        seen = after_revision
        while True:
            pending = [ev for ev in self._history if ev.item.mod_revision > seen]
            for ev in pending:
                seen = ev.item.mod_revision
                if ev.item.key.startswith(prefix):
                    yield ev
            if not pending:
                async with self._changed:
                    await self._changed.wait()
