"""Rule: pools never overlap. CreatePool refuses a pool that would hand out an address another
pool hands out (the same CIDR, a larger or smaller one, overlapping ranges) with
FAILED_PRECONDITION (POOL_OVERLAP naming the other pool), also when two tke-ipamd replicas
create overlapping pools at the same moment; the addresses that decide it cannot be changed
afterwards. Pools in other subnets, and pools sharing a subnet with disjoint ranges, are
created as before. Real tke-ipamd processes on the session's etcd, on their unix sockets."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from tests.support.etcd import EtcdProcess
from tests.support.ipamd_daemon import IpamdDaemon
from tests.support.rpc import detail_of, expect_error
from tke.internal.ipamd.pools import pool_layout
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc

OVERLAP = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture
async def replicas(etcd: EtcdProcess) -> AsyncIterator[list[ipam_pb2_grpc.IPAMServiceAsyncStub]]:
    """Two tke-ipamd replicas sharing one etcd prefix."""
    prefix = f"/pools-{uuid.uuid4().hex[:8]}"
    with IpamdDaemon([etcd.endpoint], prefix) as a, IpamdDaemon([etcd.endpoint], prefix) as b:
        channels = [grpc.aio.insecure_channel(a.target), grpc.aio.insecure_channel(b.target)]
        try:
            yield [ipam_pb2_grpc.IPAMServiceStub(c) for c in channels]
        finally:
            for c in channels:
                await c.close()


def pool(name: str, cidr: str, *ranges: tuple[str, str]) -> ipam_pb2.CreatePoolRequest:
    return ipam_pb2.CreatePoolRequest(
        pool=ipam_pb2.Pool(name=name, cidr=cidr, ranges=[ipam_pb2.IPRange(start=s, end=e) for s, e in ranges])
    )


async def refused_for_overlap(
    stub: ipam_pb2_grpc.IPAMServiceAsyncStub, request: ipam_pb2.CreatePoolRequest, with_: str
) -> str:
    err = await expect_error(stub.CreatePool(request, timeout=20), OVERLAP)
    [violation] = detail_of(err, error_details_pb2.PreconditionFailure).violations
    assert (violation.type, violation.subject) == ("POOL_OVERLAP", f"pools/{with_}"), violation
    await expect_error(stub.GetPool(ipam_pb2.GetPoolRequest(name=request.pool.name)), grpc.StatusCode.NOT_FOUND)
    return str(err.details())


async def test_a_pool_sharing_an_address_with_another_is_refused(
    replicas: list[ipam_pb2_grpc.IPAMServiceAsyncStub],
) -> None:
    stub, other = replicas
    await stub.CreatePool(pool("net-a", "10.10.1.0/24"), timeout=20)
    await stub.CreatePool(pool("split-low", "10.10.9.0/24", ("10.10.9.10", "10.10.9.99")), timeout=20)

    message = await refused_for_overlap(other, pool("same", "10.10.1.0/24"), "net-a")
    assert "pool.cidr" in message and "10.10.1.2-10.10.1.254" in message  # the gateway .1 is nobody's
    await refused_for_overlap(stub, pool("wider", "10.10.0.0/16"), "net-a")
    await refused_for_overlap(stub, pool("narrower", "10.10.1.128/25"), "net-a")
    message = await refused_for_overlap(stub, pool("one", "10.10.0.0/16", ("10.10.1.77", "10.10.1.77")), "net-a")
    assert "pool.ranges" in message and "10.10.1.77 " in message
    await refused_for_overlap(other, pool("split-mid", "10.10.9.0/24", ("10.10.9.99", "10.10.9.150")), "split-low")

    # What never shares an address is created: another subnet, the same subnet's other range.
    await other.CreatePool(pool("net-b", "10.10.2.0/24"), timeout=20)
    await stub.CreatePool(pool("split-high", "10.10.9.0/24", ("10.10.9.100", "10.10.9.200")), timeout=20)
    names = {p.name for p in (await stub.ListPools(ipam_pb2.ListPoolsRequest())).pools}
    assert names == {"net-a", "net-b", "split-low", "split-high"}


async def test_the_addresses_of_a_pool_cannot_be_changed_into_another_pool(
    replicas: list[ipam_pb2_grpc.IPAMServiceAsyncStub],
) -> None:
    stub, _ = replicas
    await stub.CreatePool(pool("low", "10.11.0.0/24", ("10.11.0.10", "10.11.0.20")), timeout=20)
    await stub.CreatePool(pool("high", "10.11.0.0/24", ("10.11.0.30", "10.11.0.40")), timeout=20)
    for path, change in (
        ("ranges", ipam_pb2.Pool(name="high", ranges=[ipam_pb2.IPRange(start="10.11.0.15", end="10.11.0.40")])),
        ("cidr", ipam_pb2.Pool(name="high", cidr="10.11.0.0/16")),
        ("excluded", ipam_pb2.Pool(name="high", excluded=["10.11.0.30"])),
        ("gateway", ipam_pb2.Pool(name="high", gateway="10.11.0.15")),
    ):
        request = ipam_pb2.UpdatePoolRequest(pool=change, update_mask=field_mask_pb2.FieldMask(paths=[path]))
        await expect_error(stub.UpdatePool(request, timeout=20), grpc.StatusCode.INVALID_ARGUMENT)
    got = await stub.GetPool(ipam_pb2.GetPoolRequest(name="high"))
    assert [(r.start, r.end) for r in got.ranges] == [("10.11.0.30", "10.11.0.40")]
    # What may change still does.
    request = ipam_pb2.UpdatePoolRequest(
        pool=ipam_pb2.Pool(name="high", node_names=["n1"]), update_mask=field_mask_pb2.FieldMask(paths=["node_names"])
    )
    assert list((await stub.UpdatePool(request, timeout=20)).node_names) == ["n1"]


async def test_two_replicas_racing_overlapping_creates_store_one_of_them(
    replicas: list[ipam_pb2_grpc.IPAMServiceAsyncStub],
) -> None:
    """Twenty rounds; in each, both replicas create a pool over the same subnet at once."""

    async def create(stub: ipam_pb2_grpc.IPAMServiceAsyncStub, request: ipam_pb2.CreatePoolRequest) -> bool:
        try:
            await stub.CreatePool(request, timeout=30)
        except grpc.aio.AioRpcError as err:
            assert err.code() == OVERLAP, err
            return False
        return True

    for i in range(20):
        cidr = f"10.12.{i}.0/24"
        outcomes = await asyncio.gather(
            create(replicas[0], pool(f"r{i}-a", cidr)),
            create(replicas[1], pool(f"r{i}-b", f"10.12.{i}.128/25")),
        )
        assert sorted(outcomes) == [False, True], (i, outcomes)

    stored = (await replicas[0].ListPools(ipam_pb2.ListPoolsRequest())).pools
    assert len(stored) == 20
    owned: dict[int, str] = {}
    for p in stored:
        for seg in pool_layout(p).segments:
            for address in range(seg.first, seg.last + 1):
                assert address not in owned, f"{ipaddress.IPv4Address(address)} in {p.name} and {owned[address]}"
                owned[address] = p.name
