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
from tke.internal.storage.store import TooLarge, Unavailable
from tke.ipam.v1 import ipam_pb2
from tke.plugins.ip_storage.etcd import EtcdIPStorage, EtcdIPStorageConfig
from tke.plugins.ip_storage.etcd_batch import TxnBatcher


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


def txn(key: bytes) -> rpc.TxnRequest:
    compare = [rpc.Compare(key=key, result=rpc.Compare.CompareResult.EQUAL, target=rpc.Compare.CompareTarget.CREATE)]
    return rpc.TxnRequest(compare=compare, success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=b"v"))])


async def test_a_merged_transaction_refused_whole_is_sent_again_one_by_one() -> None:
    """etcd refusing the merged transaction (too large, say) must not fail the callers: each
    one's own transaction is sent alone and answered."""
    sent: list[int] = []
    gate = asyncio.Event()

    async def send(request: rpc.TxnRequest) -> rpc.TxnResponse:
        sent.append(len(request.compare))
        await gate.wait()
        if len(request.compare) > 1:
            raise TooLarge("etcd: request is too large")
        return rpc.TxnResponse(succeeded=True)

    batcher = TxnBatcher(send)
    calls = [asyncio.create_task(batcher.txn(txn(f"k{i}".encode()))) for i in range(5)]
    await asyncio.sleep(0)
    gate.set()
    answers = await asyncio.gather(*calls)
    assert all(a.succeeded for a in answers)
    assert sent == [1, 4, 1, 1, 1, 1], sent  # the first alone, the other four merged, refused, then alone


async def test_a_merged_transaction_cut_off_fails_every_caller_as_ambiguous() -> None:
    gate = asyncio.Event()

    async def send(request: rpc.TxnRequest) -> rpc.TxnResponse:
        await gate.wait()
        if len(request.compare) > 1:
            raise Unavailable("etcd: connection broke", ambiguous=True)
        return rpc.TxnResponse(succeeded=True)

    batcher = TxnBatcher(send)
    calls = [asyncio.create_task(batcher.txn(txn(f"k{i}".encode()))) for i in range(4)]
    await asyncio.sleep(0)
    gate.set()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(outcomes[0], rpc.TxnResponse)
    # Each of the merged ones reads its own write back, as after any interrupted transaction.
    assert all(isinstance(o, Unavailable) and o.ambiguous for o in outcomes[1:]), outcomes
