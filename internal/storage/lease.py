"""Leases: keys that live only as long as their lease is kept alive (etcd's leases).

The seam behind two features: leader election (a leader key bound to a lease that the leader
keeps alive; when the leader dies the key goes with the lease) and expiring objects (events,
see `tke.internal.storage.ttl`). Contract:
- `grant(ttl)` returns a new lease id that expires `ttl` seconds later unless kept alive (a
  store may lengthen a very short TTL: etcd's minimum is 1.5 election timeouts).
- `keep_alive(lease)` renews it for its full TTL and returns that TTL; an expired or revoked
  lease raises LeaseExpired (the keys bound to it are already gone).
- `revoke(lease)` ends it now and removes its keys; revoking a lease that is gone is not an
  error.
- `create`/`update` with `lease=` bind the key to the lease (0: no lease, as `Store`); a write
  naming an unknown lease raises LeaseExpired. Writing a key without a lease unbinds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from tke.internal.storage.store import Claim, Guard, Item, StorageError, Store


class LeaseExpired(StorageError):
    """The lease does not exist (any more): it expired or was revoked."""

    def __init__(self, lease: int) -> None:
        super().__init__(f"lease {lease:x} has expired or was revoked")
        self.lease = lease


@runtime_checkable
class LeasedStore(Store, Protocol):
    """A Store whose keys can be bound to leases."""

    async def create(
        self,
        key: str,
        value: bytes,
        *,
        guards: Sequence[Guard] = (),
        claims: Sequence[Claim] = (),
        touches: Sequence[str] = (),
        lease: int = 0,
    ) -> Item: ...

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
    ) -> Item: ...

    async def grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds (at least 1; the store may lengthen a shorter one)."""
        ...

    async def keep_alive(self, lease: int) -> int:
        """Renew the lease for its TTL; returns the TTL. Raises LeaseExpired."""
        ...

    async def revoke(self, lease: int) -> None:
        """End the lease now, removing its keys."""
        ...
