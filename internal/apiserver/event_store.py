"""Where events are stored: like any kind, but each one expires a while after its last
occurrence, so that the record of what happened stays bounded."""

from __future__ import annotations

from tke.internal.storage.lease import LeasedStore
from tke.internal.storage.store import Store
from tke.internal.storage.ttl import ExpiringStore

DEFAULT_EVENT_TTL = 3600.0


def event_store(store: Store, ttl: float) -> Store:
    """Where events go: `store` with every write bound to a lease of `ttl` seconds, when the
    store has leases (etcd and the memory fake do); 0 keeps events forever."""
    if ttl > 0 and isinstance(store, LeasedStore):
        return ExpiringStore(store, ttl)
    return store
