"""The IP storage contract, run against every implementation (in-memory and etcd): each
mutation applies whole or not at all, and says why it lost. A third-party IP storage plugin
can run these tests against its own class."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tke.internal.ipamd.allocator import Block
from tke.internal.ipamd.storage import IPStorage, Lost, PoolEntry, PoolExists, Stored
from tke.ipam.v1 import ipam_pb2

IMMUTABLE = ipam_pb2.RELEASE_POLICY_IMMUTABLE


def allocation(ip: str, container: str = "", pod: str = "p", policy: int = 1) -> ipam_pb2.Allocation:
    return ipam_pb2.Allocation(
        pool="p",
        ip=ip,
        container_id=container,
        ifname="eth0" if container else "",
        node="n1",
        release_policy=policy,  # type: ignore[arg-type]
        owner=ipam_pb2.Owner(namespace="ns", pod_name=pod, workload_kind="StatefulSet", workload_name="db"),
    )


async def new_pool(storage: IPStorage, name: str = "p", cidr: str = "10.0.0.0/24") -> PoolEntry:
    created = await storage.create_pool(
        ipam_pb2.Pool(name=name, cidr=cidr), pool_set_version=(await storage.pool_set()).version
    )
    assert isinstance(created, PoolEntry)
    return created


async def test_pools(ip_storage: IPStorage) -> None:
    entry = await new_pool(ip_storage)
    with pytest.raises(PoolExists):
        await new_pool(ip_storage)
    marked = await ip_storage.update_pool(entry, entry.pool, deleting=True)
    assert marked is not None and marked.deleting and marked.version > entry.version
    assert await ip_storage.update_pool(entry, entry.pool, deleting=False) is None  # stale version
    assert not await ip_storage.delete_pool(entry)
    assert await ip_storage.delete_pool(marked)
    assert await ip_storage.get_pool("p") is None


async def test_a_pool_is_created_only_against_the_current_set_of_pools(ip_storage: IPStorage) -> None:
    empty = await ip_storage.pool_set()
    assert (empty.pools, empty.version) == ([], 0)
    first = await new_pool(ip_storage, "a", "10.0.0.0/24")
    after = await ip_storage.pool_set()
    assert [e.pool.name for e in after.pools] == ["a"] and after.version > 0
    # A create checked against the empty set lost: "a" was created meanwhile.
    stale = await ip_storage.create_pool(ipam_pb2.Pool(name="b", cidr="10.0.1.0/24"), pool_set_version=0)
    assert stale is Lost.POOL_SET and await ip_storage.get_pool("b") is None
    # A name taken is PoolExists whatever the version.
    with pytest.raises(PoolExists):
        await ip_storage.create_pool(ipam_pb2.Pool(name="a", cidr="10.0.2.0/24"), pool_set_version=0)
    # Updates and deletes leave the set's version alone (they never add addresses).
    marked = await ip_storage.update_pool(first, first.pool, deleting=True)
    assert marked is not None and await ip_storage.delete_pool(marked)
    assert (await ip_storage.pool_set()).version == after.version
    assert isinstance(
        await ip_storage.create_pool(ipam_pb2.Pool(name="b", cidr="10.0.1.0/24"), pool_set_version=after.version),
        PoolEntry,
    )


async def test_reserve_is_all_or_nothing_and_says_why(ip_storage: IPStorage) -> None:
    entry = await new_pool(ip_storage)
    empty = await ip_storage.block("p", 0)
    assert empty.version == 0
    first = await ip_storage.reserve(entry.version, replace(empty, used=0b1), allocation("10.0.0.2", "c1", "a"))
    assert isinstance(first, Stored)
    block = await ip_storage.block("p", 0)
    assert block.used == 0b1 and block.version == first.version

    # A stale block version loses, and writes nothing.
    stale = await ip_storage.reserve(entry.version, replace(empty, used=0b10), allocation("10.0.0.3", "c2", "b"))
    assert stale is Lost.BLOCK
    assert await ip_storage.by_attachment("c2", "eth0") is None
    # The interface already has an address.
    taken = await ip_storage.reserve(entry.version, replace(block, used=0b11), allocation("10.0.0.3", "c1", "a"))
    assert taken is Lost.ATTACHMENT
    # The pool changed.
    assert await ip_storage.reserve(0, replace(block, used=0b11), allocation("10.0.0.3", "c3", "c")) is Lost.POOL
    assert (await ip_storage.block("p", 0)).used == 0b1  # still only the first


async def test_fixed_owner_is_unique_and_indexes_move(ip_storage: IPStorage) -> None:
    entry = await new_pool(ip_storage)
    block = await ip_storage.block("p", 0)
    fixed = allocation("10.0.0.2", "c1", "db-0", IMMUTABLE)
    held = await ip_storage.reserve(entry.version, replace(block, used=0b1), fixed)
    assert isinstance(held, Stored)
    block = await ip_storage.block("p", 0)
    twin = allocation("10.0.0.3", "c2", "db-0", IMMUTABLE)
    assert await ip_storage.reserve(entry.version, replace(block, used=0b11), twin) is Lost.OWNER

    # Move it to another container: the old interface no longer finds it, the new one does.
    moved = ipam_pb2.Allocation()
    moved.CopyFrom(held.allocation)
    moved.container_id, moved.node = "c9", "n2"
    after = await ip_storage.replace(held, moved)
    assert isinstance(after, Stored)
    assert await ip_storage.by_attachment("c1", "eth0") is None
    found = await ip_storage.by_attachment("c9", "eth0")
    assert found is not None and found.version == after.version
    assert [s.allocation.container_id for s in await ip_storage.by_node("n2")] == ["c9"]
    assert await ip_storage.by_node("n1") == []
    assert (await ip_storage.count_by_node("n2"), await ip_storage.count_by_node("n1")) == (1, 0)
    owner = await ip_storage.by_owner("ns/StatefulSet/db/db-0")
    assert owner is not None and owner.allocation.container_id == "c9"
    assert [s.allocation.ip for s in await ip_storage.by_workload("ns", "StatefulSet", "db")] == ["10.0.0.2"]
    assert await ip_storage.replace(held, moved) is Lost.ALLOCATION  # the old version is stale

    # Release it: everything goes, the block is written.
    block = await ip_storage.block("p", 0)
    assert await ip_storage.release(held, replace(block, used=0)) is Lost.ALLOCATION
    version = await ip_storage.release(after, replace(block, used=0))
    assert isinstance(version, int)
    assert await ip_storage.by_owner("ns/StatefulSet/db/db-0") is None
    assert await ip_storage.by_attachment("c9", "eth0") is None
    assert await ip_storage.by_address("p", "10.0.0.2") is None
    assert not await ip_storage.has_allocations("p")
    assert (await ip_storage.block("p", 0)).used == 0


async def test_a_retained_address_counts_for_its_last_node_until_it_moves_or_goes(ip_storage: IPStorage) -> None:
    """count_by_node counts what a node holds: attached addresses and the fixed ones retained
    since their last container there; by_node lists the attached ones only."""
    entry = await new_pool(ip_storage)
    block = await ip_storage.block("p", 0)
    held = await ip_storage.reserve(entry.version, replace(block, used=0b1), allocation("10.0.0.2", "c1", "db-0", 2))
    assert isinstance(held, Stored)
    retained = ipam_pb2.Allocation()
    retained.CopyFrom(held.allocation)
    retained.container_id, retained.ifname, retained.state = "", "", ipam_pb2.ALLOCATION_STATE_RETAINED
    kept = await ip_storage.replace(held, retained)
    assert isinstance(kept, Stored)
    assert (await ip_storage.by_node("n1"), await ip_storage.count_by_node("n1")) == ([], 1)
    assert await ip_storage.by_attachment("c1", "eth0") is None

    # Taken over by a container on n2: its count goes there, in the same write.
    moved = ipam_pb2.Allocation()
    moved.CopyFrom(retained)
    moved.container_id, moved.ifname, moved.node, moved.state = "c9", "eth0", "n2", ipam_pb2.ALLOCATION_STATE_ATTACHED
    after = await ip_storage.replace(kept, moved)
    assert isinstance(after, Stored)
    assert (await ip_storage.count_by_node("n1"), await ip_storage.count_by_node("n2")) == (0, 1)
    assert [s.allocation.container_id for s in await ip_storage.by_node("n2")] == ["c9"]

    # Retained on n2, then released for good: no node counts it.
    again = ipam_pb2.Allocation()
    again.CopyFrom(moved)
    again.container_id, again.ifname, again.state = "", "", ipam_pb2.ALLOCATION_STATE_RETAINED
    last = await ip_storage.replace(after, again)
    assert isinstance(last, Stored)
    assert (await ip_storage.by_node("n2"), await ip_storage.count_by_node("n2")) == ([], 1)
    assert isinstance(await ip_storage.release(last, replace(await ip_storage.block("p", 0), used=0)), int)
    assert (await ip_storage.count_by_node("n1"), await ip_storage.count_by_node("n2")) == (0, 0)
    assert not await ip_storage.has_allocations("p")


async def test_iterate_allocations_in_pages(ip_storage: IPStorage) -> None:
    entry = await new_pool(ip_storage)
    used = 0
    for i in range(5):
        block: Block = await ip_storage.block("p", 0)
        used |= 1 << i
        a = allocation(f"10.0.0.{10 - i}", f"c{i}")
        got = await ip_storage.reserve(entry.version, replace(block, used=used), a)
        assert isinstance(got, Stored)
    seen, cursor = [], ""
    while True:
        page, cursor = await ip_storage.allocations("p", cursor, 2)
        seen += [s.allocation.ip for s in page]
        if not cursor:
            break
    assert seen == [f"10.0.0.{i}" for i in range(6, 11)]  # address order, not insertion order


async def test_bindings(ip_storage: IPStorage) -> None:
    b = ipam_pb2.Binding(workload=ipam_pb2.WorkloadRef(namespace="ns", kind="StatefulSet", name="db"), pool="p")
    await ip_storage.put_binding(b)
    assert await ip_storage.get_binding("ns", "StatefulSet", "db") == b
    assert await ip_storage.list_bindings("ns") == [b]
    assert await ip_storage.list_bindings("other") == []
    assert await ip_storage.delete_binding("ns", "StatefulSet", "db")
    assert not await ip_storage.delete_binding("ns", "StatefulSet", "db")


async def test_watch_cursors(ip_storage: IPStorage) -> None:
    assert await ip_storage.watch_cursor("pods") == ""
    await ip_storage.put_watch_cursor("pods", "1041")
    await ip_storage.put_watch_cursor("statefulsets", "17")
    assert await ip_storage.watch_cursor("pods") == "1041"
    await ip_storage.put_watch_cursor("pods", "1099")
    assert (await ip_storage.watch_cursor("pods"), await ip_storage.watch_cursor("statefulsets")) == ("1099", "17")
    assert await ip_storage.allocations("", "", 10) == ([], "")  # cursors are no allocations


async def test_a_write_decided_on_a_namespace_s_bindings_applies_only_while_they_are_unchanged(
    ip_storage: IPStorage,
) -> None:
    entry = await new_pool(ip_storage)
    never = await ip_storage.namespace_bindings("ns")
    assert (never.bindings, never.version) == ([], 0)
    db = ipam_pb2.Binding(workload=ipam_pb2.WorkloadRef(namespace="ns", kind="StatefulSet", name="db"), pool="p")
    await ip_storage.put_binding(db)
    put = await ip_storage.namespace_bindings("ns")
    assert [b.workload.name for b in put.bindings] == ["db"] and put.version > 0
    # Another namespace's bindings have their own version.
    other = ipam_pb2.Binding(workload=ipam_pb2.WorkloadRef(namespace="other", kind="Pod", name="x"))
    await ip_storage.put_binding(other)
    assert (await ip_storage.namespace_bindings("ns")).version == put.version

    empty = await ip_storage.block("p", 0)
    stale = await ip_storage.reserve(
        entry.version, replace(empty, used=0b1), allocation("10.0.0.2", "c1", "a"), bindings=never
    )
    assert stale is Lost.BINDINGS
    assert await ip_storage.by_attachment("c1", "eth0") is None and (await ip_storage.block("p", 0)).version == 0
    taken = await ip_storage.reserve(
        entry.version, replace(empty, used=0b1), allocation("10.0.0.2", "c1", "a"), bindings=put
    )
    assert isinstance(taken, Stored)

    # A delete changes the version too: a replace decided before it loses and changes nothing.
    assert await ip_storage.delete_binding("ns", "StatefulSet", "db")
    deleted = await ip_storage.namespace_bindings("ns")
    assert deleted.bindings == [] and deleted.version > put.version
    moved = allocation("10.0.0.2", "c2", "a")
    assert await ip_storage.replace(taken, moved, bindings=put) is Lost.BINDINGS
    assert (await ip_storage.by_attachment("c1", "eth0")) == taken
    assert isinstance(await ip_storage.replace(taken, moved, bindings=deleted), Stored)
    # Deleting what is not there changes nothing.
    assert not await ip_storage.delete_binding("ns", "StatefulSet", "db")
    assert (await ip_storage.namespace_bindings("ns")).version == deleted.version
