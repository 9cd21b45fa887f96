"""An ipamd killed (SIGKILL) in the middle of a burst of allocations while a second replica
serves the same pool. Afterwards: every address has at most one owner, every allocation a
caller was told about is stored with the address it was told, and garbage collection with the
attachments that really exist cleans up what the killed requests left behind."""

from __future__ import annotations

import asyncio
import uuid

import grpc

from tests.support.etcd import EtcdProcess
from tests.support.ipamd_daemon import IpamdDaemon
from tests.support.waiting import wait_for
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc

NODE = "node-k"


async def list_all(stub: ipam_pb2_grpc.IPAMServiceAsyncStub, pool: str) -> list[ipam_pb2.Allocation]:
    out: list[ipam_pb2.Allocation] = []
    token = ""
    while True:
        page = await stub.ListAllocations(ipam_pb2.ListAllocationsRequest(pool=pool, page_size=500, page_token=token))
        out += list(page.allocations)
        token = page.next_page_token
        if not token:
            return out


async def test_an_ipamd_killed_mid_burst_loses_nothing_acknowledged(etcd: EtcdProcess) -> None:
    prefix = f"/ipamd-kill-{uuid.uuid4().hex[:8]}"
    with IpamdDaemon([etcd.endpoint], prefix) as doomed, IpamdDaemon([etcd.endpoint], prefix) as survivor:
        a = grpc.aio.insecure_channel(doomed.target)
        b = grpc.aio.insecure_channel(survivor.target)
        stubs = [ipam_pb2_grpc.IPAMServiceStub(a), ipam_pb2_grpc.IPAMServiceStub(b)]
        await stubs[1].CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="burst", cidr="10.66.0.0/22")))
        acknowledged: dict[str, str] = {}  # container id -> address

        async def allocate(i: int) -> None:
            owner = ipam_pb2.Owner(namespace="burst", pod_name=f"p{i}", pod_uid=f"u{i}")
            request = ipam_pb2.AllocateRequest(
                owner=owner, container_id=f"c{i}", ifname="eth0", node=NODE, pool="burst"
            )
            try:
                resp = await stubs[i % 2].Allocate(request, timeout=60)
            except grpc.aio.AioRpcError:
                return  # the killed daemon's callers get an error: their outcome is unknown
            acknowledged[f"c{i}"] = resp.allocation.ip

        tasks = [asyncio.create_task(allocate(i)) for i in range(300)]

        def doomed_serving() -> bool:
            """Mid-burst: the doomed replica has answered some of its half, not all."""
            return sum(int(c[1:]) % 2 == 0 for c in list(acknowledged)) >= 10

        await wait_for(doomed_serving, what="the doomed replica answering")
        assert doomed.process is not None
        doomed.process.kill()
        await asyncio.gather(*tasks)
        assert len(acknowledged) >= 150, "the surviving replica should have served its half"

        stored = await list_all(stubs[1], "burst")
        by_container = {alloc.container_id: alloc for alloc in stored}
        addresses = [alloc.ip for alloc in stored]
        assert len(addresses) == len(set(addresses)), "an address has two owners"
        for container, ip in acknowledged.items():
            assert container in by_container and by_container[container].ip == ip, f"{container} lost {ip}"

        # CNI GC with the attachments that exist (the acknowledged ones) releases the rest.
        valid = [ipam_pb2.Attachment(container_id=c, ifname="eth0") for c in acknowledged]
        collected = await stubs[1].GarbageCollect(
            ipam_pb2.GarbageCollectRequest(node=NODE, valid_attachments=valid, min_age_seconds=0)
        )
        print(f"acknowledged {len(acknowledged)}, stored {len(stored)}, collected {len(collected.collected)}")
        assert len(collected.collected) == len(stored) - len(acknowledged)
        after = await list_all(stubs[1], "burst")
        assert sorted(x.ip for x in after) == sorted(acknowledged.values())
        for channel in (a, b):
            await channel.close()
