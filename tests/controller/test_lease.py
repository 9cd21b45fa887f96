"""The lease seam of the Store (etcd and the memory fake), and the expiring store events use."""

from __future__ import annotations

import pytest

from tests.support.memory_store import MemoryStore
from tests.support.waiting import wait_for
from tke.internal.storage.etcd import EtcdStore
from tke.internal.storage.lease import LeasedStore, LeaseExpired
from tke.internal.storage.store import NotFound
from tke.internal.storage.ttl import ExpiringStore


async def gone(store: LeasedStore, key: str) -> bool:
    try:
        await store.get(key)
    except NotFound:
        return True
    return False


@pytest.fixture(params=["etcd", "memory"])
def leased(request: pytest.FixtureRequest, store: EtcdStore) -> LeasedStore:
    return store if request.param == "etcd" else MemoryStore()


async def test_a_key_bound_to_a_lease_goes_when_the_lease_is_revoked(leased: LeasedStore, etcd_prefix: str) -> None:
    lease = await leased.grant(30)
    await leased.create(f"{etcd_prefix}/a", b"1", lease=lease)
    await leased.create(f"{etcd_prefix}/b", b"2")
    assert await leased.keep_alive(lease) == 30
    await leased.revoke(lease)
    with pytest.raises(NotFound):
        await leased.get(f"{etcd_prefix}/a")
    assert (await leased.get(f"{etcd_prefix}/b")).value == b"2"
    with pytest.raises(LeaseExpired):
        await leased.keep_alive(lease)
    with pytest.raises(LeaseExpired):
        await leased.create(f"{etcd_prefix}/c", b"3", lease=lease)
    await leased.revoke(lease)  # revoking twice is fine


async def test_a_lease_not_kept_alive_expires_with_its_keys(leased: LeasedStore, etcd_prefix: str) -> None:
    lease = await leased.grant(2)
    item = await leased.create(f"{etcd_prefix}/x", b"1", lease=lease)
    await leased.update(f"{etcd_prefix}/x", b"2", expected_revision=item.mod_revision, lease=lease)
    await wait_for(lambda: gone(leased, f"{etcd_prefix}/x"), what="the key going with its lease")
    with pytest.raises(LeaseExpired):
        await leased.keep_alive(lease)


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
