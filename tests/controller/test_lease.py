"""The expiring store events use, over etcd's leases (the lease contract itself is in
tests/storage/test_store_contract.py)."""

from __future__ import annotations

import pytest

from tests.support.waiting import wait_for
from tke.internal.storage.etcd import EtcdStore
from tke.internal.storage.lease import LeasedStore
from tke.internal.storage.store import NotFound
from tke.internal.storage.ttl import ExpiringStore


async def gone(store: LeasedStore, key: str) -> bool:
    try:
        await store.get(key)
    except NotFound:
        return True
    return False


async def test_expiring_store_shares_leases_and_survives_a_revoked_one(store: EtcdStore, etcd_prefix: str) -> None:
    expiring = ExpiringStore(store, ttl=2, reuse=0.5)
    a = await expiring.create(f"{etcd_prefix}/a", b"1")
    await expiring.create(f"{etcd_prefix}/b", b"1")
    first = expiring._lease
    await store.revoke(first)  # an operator (or a restored etcd) dropped it
    with pytest.raises(NotFound):
        await store.get(f"{etcd_prefix}/a")
    c = await expiring.create(f"{etcd_prefix}/c", b"1")
    assert expiring._lease != first
    assert c.mod_revision > a.mod_revision
    await wait_for(lambda: gone(store, f"{etcd_prefix}/c"), what="the expiring key going")
