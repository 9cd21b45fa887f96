"""Allocations while etcd is killed and restarted under them: transactions cut off mid-flight are
resolved by reading back, callers retry the same interface (as CNI runtimes do), and afterwards
every interface has exactly one address, no address has two, and the block bitmaps agree with
the allocations exactly (nothing leaked, nothing double-booked)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.etcd import EtcdProcess
from tke.internal.ipamd.allocator import BLOCK_SIZE
from tke.internal.ipamd.ipam import IPAM
from tke.internal.ipamd.pools import pool_layout
from tke.internal.rpc.errors import ApiError
from tke.internal.storage.store import Unavailable
from tke.ipam.v1 import ipam_pb2
from tke.plugins.ip_providers.static import StaticProvider
from tke.plugins.ip_storage.etcd import EtcdIPStorage, EtcdIPStorageConfig

from .conftest import allocate_request


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    server = EtcdProcess(tmp_path / "etcd")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
async def test_allocations_survive_an_etcd_crash(own_etcd: EtcdProcess) -> None:
    config = EtcdIPStorageConfig(endpoints=[own_etcd.endpoint], prefix="/faults", request_timeout=1.0, retry_budget=3.0)
    storages = [EtcdIPStorage(config), EtcdIPStorage(config)]
    replicas = [IPAM(s, {"static": StaticProvider()}, cooldown=0) for s in storages]
    try:
        await replicas[0].create_pool(ipam_pb2.Pool(name="p", cidr="10.30.0.0/22"))
        loop = asyncio.get_running_loop()
        finished: list[float] = []
        outage: list[float] = []
        midway = asyncio.Event()

        async def runtime(i: int) -> str:
            """Allocate for one container until it succeeds, like a CNI runtime retrying ADD."""
            while True:
                try:
                    result = await replicas[i % 2].allocate(allocate_request(f"pod-{i}", f"c{i}"))
                    finished.append(loop.time())
                    if len(finished) == 50:
                        midway.set()
                    return result.allocation.ip
                except (ApiError, Unavailable) as err:
                    code = err.code if isinstance(err, ApiError) else grpc.StatusCode.UNAVAILABLE
                    assert code == grpc.StatusCode.UNAVAILABLE, err
                    await asyncio.sleep(0.2)

        async def crash() -> None:
            await midway.wait()
            await asyncio.to_thread(own_etcd.kill)
            outage.append(loop.time())
            await asyncio.sleep(1.0)
            await asyncio.to_thread(own_etcd.start)
            outage.append(loop.time())

        results = await asyncio.wait_for(asyncio.gather(crash(), *(runtime(i) for i in range(300))), 90)
        ips = [ip for ip in results[1:] if isinstance(ip, str)]
        assert len(set(ips)) == 300, "an address was handed out twice"
        # The crash hit the burst: allocations finished before it and after the restart.
        assert min(finished) < outage[0] and max(finished) > outage[1], "etcd died outside the burst"

        # Every interface has the address it was told, and the bitmaps hold exactly those.
        stored, _ = await storages[0].allocations("p", "", 10_000)
        assert sorted(s.allocation.ip for s in stored) == sorted(ips)
        for i, ip in enumerate(ips):
            held = await storages[1].by_attachment(f"c{i}", "eth0")
            assert held is not None and held.allocation.ip == ip
        entry = await storages[0].get_pool("p")
        assert entry is not None
        layout = pool_layout(entry.pool)
        owned = {
            layout.ip_at(b.index * BLOCK_SIZE + bit)
            for b in await storages[0].blocks("p")
            for bit in range(BLOCK_SIZE)
            if b.owned(bit)
        }
        assert owned == set(ips)
    finally:
        for s in storages:
            await s.close()
