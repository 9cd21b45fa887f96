"""An in-memory Store: the fake of the storage contract for unit tests of pure logic.

It keeps the full history (until `compact`), so reads at and watches from any kept revision
behave like etcd's; watches send Progress messages while nothing changes, and leases expire
by themselves (a watcher sees their keys go) as etcd's do. tests/storage/test_store_contract.py
runs the same tests against it and etcd. Single event loop only; not for production.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Sequence

from tke.internal.storage.lease import LeaseExpired
from tke.internal.storage.store import (
    AlreadyExists,
    Claim,
    Claimed,
    Compacted,
    Conflict,
    Event,
    EventType,
    FutureRevision,
    Guard,
    Item,
    NotFound,
    Page,
    PreconditionFailed,
    Progress,
    WatchMessage,
)


class MemoryStore:
    def __init__(self, progress_interval: float = 1.0) -> None:
        self._items: dict[str, Item] = {}
        self._keys: list[str] = []  # sorted
        self._revision = 1
        self._history: list[Event] = []  # every change from the compacted revision on
        self._compacted = 0
        self._base: dict[str, Item] = {}  # the state just before the compacted revision
        self._changed = asyncio.Condition()
        self.progress_interval = progress_interval
        # Leases: id -> (ttl, expiry on the monotonic clock), and the keys bound to each.
        self._leases: dict[int, tuple[int, float]] = {}
        self._lease_keys: dict[int, set[str]] = {}
        self._lease_ids = itertools.count(0x1000)

    async def close(self) -> None:
        return None

    async def _record(self, *events: Event) -> None:
        """Every event of one transaction enters the history before a watcher can look."""
        self._history.extend(events)
        async with self._changed:
            self._changed.notify_all()

    def _put(self, key: str, value: bytes, lease: int) -> Event:
        """Write `key` at the current revision (the caller has moved it on)."""
        current = self._items.get(key)
        created = current.create_revision if current is not None else self._revision
        item = Item(key, value, self._revision, created)
        self._items[key] = item
        if current is None:
            bisect.insort(self._keys, key)
        self._bind(key, lease)
        return Event(EventType.PUT, item, current.value if current is not None else None)

    def _drop(self, current: Item) -> Event:
        """Remove a key at the current revision (the caller has moved it on)."""
        key = current.key
        del self._items[key]
        self._keys.remove(key)
        self._bind(key, 0)
        gone = Item(key, current.value, self._revision, current.create_revision)
        return Event(EventType.DELETE, gone, current.value)

    def _check_claims(self, claims: Sequence[Claim]) -> None:
        for c in claims:
            if c.key in self._items:
                raise Claimed(c, self._items[c.key])

    def _check_guards(self, guards: Sequence[Guard]) -> None:
        for g in guards:
            current = self._items.get(g.key)
            if current is None or current.mod_revision != g.mod_revision:
                raise PreconditionFailed(g)

    async def create(
        self,
        key: str,
        value: bytes,
        *,
        guards: Sequence[Guard] = (),
        claims: Sequence[Claim] = (),
        touches: Sequence[str] = (),
        lease: int = 0,
    ) -> Item:
        await self._expire()
        if key in self._items:
            raise AlreadyExists(key)
        self._check_guards(guards)
        self._check_claims(claims)
        self._check_lease(lease)  # as etcd: only a write that would happen needs its lease
        self._revision += 1
        events = [self._put(key, value, lease), *(self._put(c.key, c.value, lease) for c in claims)]
        events += [self._put(k, b"", 0) for k in touches]
        await self._record(*events)
        return self._items[key]

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
        if revision > self._revision:
            raise FutureRevision(revision)
        if revision and revision != self._revision:
            items = self._state_at(prefix, revision)
        else:
            items = [self._items[k] for k in self._keys if k.startswith(prefix)]
        items = [i for i in items if i.key >= start]
        more = bool(limit) and len(items) > limit
        if limit:
            items = items[:limit]
        return Page(items=items, revision=revision or self._revision, more=more)

    def _state_at(self, prefix: str, revision: int) -> builtins.list[Item]:
        state = {k: v for k, v in self._base.items() if k.startswith(prefix)}
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

    async def update(
        self,
        key: str,
        value: bytes,
        *,
        expected_revision: int,
        claims: Sequence[Claim] = (),
        releases: Sequence[Guard] = (),
        touches: Sequence[str] = (),
        lease: int = 0,
    ) -> Item:
        current = await self.get(key)
        if current.mod_revision != expected_revision:
            raise Conflict(key, current)
        self._check_claims(claims)
        self._check_guards(releases)
        self._check_lease(lease)
        self._revision += 1
        events = [self._put(key, value, lease), *(self._put(c.key, c.value, lease) for c in claims)]
        events += [self._drop(self._items[g.key]) for g in releases]
        events += [self._put(k, b"", 0) for k in touches]
        await self._record(*events)
        return self._items[key]

    async def delete(
        self, key: str, *, expected_revision: int, releases: Sequence[Guard] = (), touches: Sequence[str] = ()
    ) -> int:
        current = await self.get(key)
        if current.mod_revision != expected_revision:
            raise Conflict(key, current)
        self._check_guards(releases)
        self._revision += 1
        events = [self._drop(current), *(self._drop(self._items[g.key]) for g in releases)]
        await self._record(*events, *(self._put(k, b"", 0) for k in touches))
        return self._revision

    async def _remove(self, current: Item) -> int:
        self._revision += 1
        await self._record(self._drop(current))
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
        """Drop the history before `revision` (reads at `revision` still work, as etcd's)."""
        if revision <= self._compacted:
            return
        for ev in self._history:
            if ev.item.mod_revision >= revision:
                break
            if ev.type is EventType.PUT:
                self._base[ev.item.key] = ev.item
            else:
                self._base.pop(ev.item.key, None)
        self._compacted = revision
        self._history = [self._forget_before(e, revision) for e in self._history if e.item.mod_revision >= revision]

    @staticmethod
    def _forget_before(event: Event, revision: int) -> Event:
        """A change made at exactly the compacted revision replaced a state compaction drops:
        etcd has no previous value for it any more."""
        if event.item.mod_revision != revision or event.prev_value is None:
            return event
        if event.type is EventType.DELETE:
            return Event(EventType.DELETE, Item(event.item.key, b"", revision, 0), None)
        return Event(EventType.PUT, event.item, None)

    async def watch(self, prefix: str, *, after_revision: int) -> AsyncIterator[WatchMessage]:
        if after_revision + 1 < self._compacted:
            raise Compacted(after_revision + 1, self._compacted)
        seen = after_revision
        next_progress = time.monotonic() + self.progress_interval
        while True:
            await self._expire()
            pending = [ev for ev in self._history if ev.item.mod_revision > seen]
            for ev in pending:
                seen = ev.item.mod_revision
                if ev.item.key.startswith(prefix):
                    yield ev
            if pending:
                continue
            now = time.monotonic()
            if now >= next_progress:
                next_progress = now + self.progress_interval
                if self._revision >= seen:  # every change up to the latest was delivered
                    seen = self._revision
                    yield Progress(seen)
                continue
            # Wait for a change, the next progress report, or a lease running out.
            wait = next_progress - now
            if self._leases:
                wait = min(wait, min(expiry for _, expiry in self._leases.values()) - now)
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), max(0.0, wait))
