"""A Store whose every written key expires a while after its last write (events).

Each create and update binds the key to a lease of at least `ttl` seconds. Leases are shared:
one lease serves every write within `reuse` seconds, so a burst of a thousand writes costs one
lease, not a thousand (the Kubernetes apiserver does the same for its events). A key therefore
lives between `ttl` and `ttl + reuse` seconds after its last write. Reads, deletes and watches
pass through unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

from tke.internal.storage.lease import LeasedStore, LeaseExpired
from tke.internal.storage.store import Claim, Guard, Item, Page, WatchMessage


class ExpiringStore:
    def __init__(self, inner: LeasedStore, ttl: float, *, reuse: float | None = None) -> None:
        self.inner = inner
        self.ttl = ttl
        self.reuse = reuse if reuse is not None else min(60.0, max(1.0, ttl / 10))
        self._lease = 0
        self._until = 0.0
        self._lock = asyncio.Lock()

    async def _current_lease(self, *, fresh: bool = False) -> int:
        async with self._lock:
            now = time.monotonic()
            if fresh or not self._lease or now >= self._until:
                self._lease = await self.inner.grant(int(self.ttl + self.reuse + 0.999))
                self._until = now + self.reuse
            return self._lease

    async def create(
        self,
        key: str,
        value: bytes,
        *,
        guards: Sequence[Guard] = (),
        claims: Sequence[Claim] = (),
        touches: Sequence[str] = (),
    ) -> Item:
        try:
            lease = await self._current_lease()
            return await self.inner.create(key, value, guards=guards, claims=claims, touches=touches, lease=lease)
        except LeaseExpired:  # revoked behind our back (etcd restored, operator): take a new one
            lease = await self._current_lease(fresh=True)
            return await self.inner.create(key, value, guards=guards, claims=claims, touches=touches, lease=lease)

    async def update(
        self,
        key: str,
        value: bytes,
        *,
        expected_revision: int,
        claims: Sequence[Claim] = (),
        releases: Sequence[Guard] = (),
        touches: Sequence[str] = (),
    ) -> Item:
        async def write(lease: int) -> Item:
            return await self.inner.update(
                key,
                value,
                expected_revision=expected_revision,
                claims=claims,
                releases=releases,
                touches=touches,
                lease=lease,
            )

        try:
            return await write(await self._current_lease())
        except LeaseExpired:
            return await write(await self._current_lease(fresh=True))

    async def get(self, key: str) -> Item:
        return await self.inner.get(key)

    async def list(self, prefix: str, *, start: str = "", limit: int = 0, revision: int = 0) -> Page:
        return await self.inner.list(prefix, start=start, limit=limit, revision=revision)

    async def delete(
        self, key: str, *, expected_revision: int, releases: Sequence[Guard] = (), touches: Sequence[str] = ()
    ) -> int:
        return await self.inner.delete(key, expected_revision=expected_revision, releases=releases, touches=touches)

    async def current_revision(self) -> int:
        return await self.inner.current_revision()

    def watch(self, prefix: str, *, after_revision: int) -> AsyncIterator[WatchMessage]:
        return self.inner.watch(prefix, after_revision=after_revision)

    async def close(self) -> None:
        """The inner store belongs to its owner, who closes it."""
