"""Group commit in the etcd IP storage: reserves and releases waiting behind one in flight
travel as one etcd transaction, and each caller still gets its own transaction's answer: the
ones that lost say why, the others apply, and two that touch the same key never travel
together (real etcd)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aetcd import rpc

from tke.internal.ipamd.allocator import Block
from tke.internal.ipamd.storage import Lost, Stored
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2
from tke.plugins.ip_storage.etcd import EtcdIPStorage, EtcdIPStorageConfig


@pytest.fixture
async def storage(etcd_config: EtcdConfig) -> AsyncIterator[EtcdIPStorage]:
    s = EtcdIPStorage(EtcdIPStorageConfig(endpoints=list(etcd_config.endpoints), prefix=etcd_config.prefix))
    try:
        yield s
    finally:
        await s.close()


def counting_sends(storage: EtcdIPStorage) -> list[int]:
    """Record the number of success operations of every transaction sent to etcd."""
    sent: list[int] = []
    send = storage._send_txn

    async def counted(request: rpc.TxnRequest) -> rpc.TxnResponse:
        sent.append(len(request.success))
        return await send(request)

    storage._batcher._send = counted
    return sent


def allocation(ip: str, container: str) -> ipam_pb2.Allocation:
    owner = ipam_pb2.Owner(namespace="ns", pod_name=container)
    return ipam_pb2.Allocation(pool="p", ip=ip, container_id=container, ifname="eth0", node="n1", owner=owner)


async def test_waiting_reserves_travel_together_and_each_gets_its_own_answer(storage: EtcdIPStorage) -> None:
    created = await storage.create_pool(ipam_pb2.Pool(name="p", cidr="10.0.0.0/16"), pool_set_version=0)
    assert not isinstance(created, Lost)
    # Block 5 is written first: a reserve that still expects it unwritten must lose.
    first = await storage.reserve(created.version, Block("p", 5, used=0b1), allocation("10.0.1.65", "c-first"))
    assert isinstance(first, Stored)
    sent = counting_sends(storage)

    requests = [(Block("p", i, used=0b1), allocation(f"10.0.{i // 4}.{(i % 4) * 64 + 1}", f"c{i}")) for i in range(20)]
    requests[5] = (Block("p", 5, used=0b11), allocation("10.0.1.66", "c5"))  # stale: block 5 is at first.version
    requests[7] = (Block("p", 7, used=0b1), allocation("10.0.1.193", "c6"))  # c6's interface, twice
    outcomes = await asyncio.gather(*(storage.reserve(created.version, b, a) for b, a in requests))

    assert outcomes[5] is Lost.BLOCK
    assert sorted([outcomes[6], outcomes[7]], key=lambda o: isinstance(o, Stored)) == [
        Lost.ATTACHMENT,
        next(o for o in (outcomes[6], outcomes[7]) if isinstance(o, Stored)),
    ]
    for i, outcome in enumerate(outcomes):
        if i in (5, 6, 7):
            continue
        assert isinstance(outcome, Stored), (i, outcome)
        block, a = requests[i]
        assert await storage.by_attachment(a.container_id, "eth0") == outcome
        assert (await storage.block("p", block.index)).version == outcome.version
    assert (await storage.block("p", 5)).version == first.version
    # Fewer transactions than reserves reached etcd: the waiting ones were merged.
    assert len(sent) < len(requests) and max(sent) > 4, sent

    # Releases merge the same way, and a stale one loses alone.
    stored = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, Stored)]
    sent.clear()
    stale = replace(stored[0][1], version=stored[0][1].version - 1)
    releases = [storage.release(stale, replace(requests[stored[0][0]][0], used=0, version=stored[0][1].version))]
    releases += [storage.release(o, replace(requests[i][0], used=0, version=o.version)) for i, o in stored[1:]]
    results = await asyncio.gather(*releases)
    assert results[0] is Lost.ALLOCATION
    assert all(isinstance(r, int) and r > 0 for r in results[1:]), results
    assert len(sent) < len(releases), sent
    for i, _ in stored[1:]:
        assert await storage.by_attachment(requests[i][1].container_id, "eth0") is None
        assert (await storage.block("p", requests[i][0].index)).used == 0
