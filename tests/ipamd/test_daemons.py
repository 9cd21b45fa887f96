"""Two real tke-ipamd processes over one real etcd, called over their unix sockets by many
separate gRPC clients at once: every Allocate succeeds and no address is handed out twice."""

from __future__ import annotations

import asyncio
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.ipamd_daemon import IpamdProcess
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc

from .conftest import allocate_request


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ipamd-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def two_daemons(workdir: Path, etcd_config: EtcdConfig) -> Iterator[list[IpamdProcess]]:
    daemons = [
        IpamdProcess(workdir, f"ipamd-{i}", endpoints=list(etcd_config.endpoints), prefix=etcd_config.prefix)
        for i in range(2)
    ]
    try:
        for d in daemons:
            d.start()
        yield daemons
    finally:
        for d in daemons:
            d.stop()


async def test_200_concurrent_allocations_from_separate_clients_on_two_daemons(
    two_daemons: list[IpamdProcess],
) -> None:
    assert stat.S_IMODE(Path(two_daemons[0].socket).stat().st_mode) == 0o600
    admin = grpc.aio.insecure_channel(two_daemons[0].target)
    stub = ipam_pb2_grpc.IPAMServiceStub(admin)
    await stub.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="burst", cidr="10.9.0.0/24")))

    channels = [grpc.aio.insecure_channel(two_daemons[i % 2].target) for i in range(200)]
    try:

        async def one(i: int) -> ipam_pb2.AllocateResponse:
            client = ipam_pb2_grpc.IPAMServiceStub(channels[i])
            resp: ipam_pb2.AllocateResponse = await client.Allocate(allocate_request(f"pod-{i}"), timeout=60)
            return resp

        results = await asyncio.gather(*(one(i) for i in range(200)))
        ips = [r.allocation.ip for r in results]
        assert len(ips) == 200
        assert len(set(ips)) == 200, "an address was handed out twice"

        # What etcd holds agrees, read through the other daemon.
        other = ipam_pb2_grpc.IPAMServiceStub(channels[1])
        listed = await other.ListAllocations(ipam_pb2.ListAllocationsRequest(pool="burst", page_size=1000))
        assert sorted(a.ip for a in listed.allocations) == sorted(ips)
        status = (await other.GetPool(ipam_pb2.GetPoolRequest(name="burst"))).status
        assert status.allocated == 200

        # Repeats are idempotent, and releases from the other daemon free everything.
        again = await other.Allocate(allocate_request("pod-0"))
        assert again.reused and again.allocation.ip == ips[0]
        releases = await asyncio.gather(
            *(
                ipam_pb2_grpc.IPAMServiceStub(channels[i]).Release(
                    ipam_pb2.ReleaseRequest(container_id=f"c-pod-{i}", ifname="eth0")
                )
                for i in range(1, 200)
            ),
            stub.Release(ipam_pb2.ReleaseRequest(container_id="c-pod-0", ifname="eth0")),
        )
        assert all(r.found for r in releases)
        status = (await stub.GetPool(ipam_pb2.GetPoolRequest(name="burst"))).status
        assert (status.allocated, status.cooling) == (0, 200)
    finally:
        for ch in channels:
            await ch.close()
        await admin.close()


async def test_fixed_address_survives_a_daemon_restart_and_a_node_move(
    two_daemons: list[IpamdProcess],
) -> None:
    first, second = two_daemons
    async with grpc.aio.insecure_channel(first.target) as ch:
        stub = ipam_pb2_grpc.IPAMServiceStub(ch)
        await stub.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="fixed", cidr="10.8.0.0/24")))
        await stub.PutBinding(
            ipam_pb2.PutBindingRequest(
                binding=ipam_pb2.Binding(
                    workload=ipam_pb2.WorkloadRef(namespace="default", kind="StatefulSet", name="db"),
                    network="fixed-net",
                    pool="fixed",
                    release_policy=ipam_pb2.RELEASE_POLICY_IMMUTABLE,
                )
            )
        )
        # The workload as cni-switch names it (no Kubernetes API configured here to resolve it).
        db = {"kind": "StatefulSet", "workload": "db"}
        lookup = await stub.LookupBinding(
            ipam_pb2.LookupBindingRequest(namespace="default", pod_name="db-0", workload_kind="StatefulSet",
                                          workload_name="db")
        )  # fmt: skip
        assert lookup.network == "fixed-net"
        got = await stub.Allocate(allocate_request("db-0", "c1", uid="u1", node="node-1", **db))
        assert (await stub.Release(ipam_pb2.ReleaseRequest(container_id="c1", ifname="eth0"))).retained
    first.stop()
    first.start()
    async with grpc.aio.insecure_channel(second.target) as ch:
        stub = ipam_pb2_grpc.IPAMServiceStub(ch)
        moved = await stub.Allocate(allocate_request("db-0", "c2", uid="u2", node="node-2", **db))
        assert moved.reused and moved.allocation.ip == got.allocation.ip
    async with grpc.aio.insecure_channel(first.target) as ch:
        stub = ipam_pb2_grpc.IPAMServiceStub(ch)
        # A late DEL of the first container (old uid) changes nothing.
        late = await stub.Release(ipam_pb2.ReleaseRequest(container_id="c1", ifname="eth0", pod_uid="u1"))
        assert not late.found
        held = await stub.GetAllocation(
            ipam_pb2.GetAllocationRequest(attachment=ipam_pb2.Attachment(container_id="c2", ifname="eth0"))
        )
        assert held.ip == got.allocation.ip and held.node == "node-2"


async def test_metrics_and_json_logs(workdir: Path, etcd_config: EtcdConfig) -> None:
    import json
    import urllib.request

    from tests.support.ports import free_port

    port = free_port()
    daemon = IpamdProcess(
        workdir,
        "metrics",
        endpoints=list(etcd_config.endpoints),
        prefix=etcd_config.prefix,
        extra=f'metrics_address = "127.0.0.1:{port}"\nlog_format = "json"',
        log_level="info",
    )
    try:
        daemon.start()
        async with grpc.aio.insecure_channel(daemon.target) as channel:
            stub = ipam_pb2_grpc.IPAMServiceStub(channel)
            await stub.ListPools(ipam_pb2.ListPoolsRequest())
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.GetPool(ipam_pb2.GetPoolRequest(name="missing"))
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
        )
        assert 'method="ListPools"' in text and 'code="NOT_FOUND"' in text
    finally:
        daemon.stop()
    lines = [json.loads(line) for line in daemon.log_path.read_text().splitlines() if line.startswith("{")]
    assert any("GetPool" in str(line) for line in lines)
