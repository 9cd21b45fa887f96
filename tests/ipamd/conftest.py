"""IPAM fixtures: an IP storage of each kind (in-memory, and etcd on the session's real server
with a fresh prefix), a controllable clock, and request builders."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.memory_ip_storage import MemoryIPStorage
from tke.internal.ipamd.storage import IPStorage
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2
from tke.plugins.ip_storage.etcd import EtcdIPStorage, EtcdIPStorageConfig


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "etcd"])
async def ip_storage(request: pytest.FixtureRequest) -> AsyncIterator[IPStorage]:
    if request.param == "memory":
        yield MemoryIPStorage()
        return
    etcd_config: EtcdConfig = request.getfixturevalue("etcd_config")
    storage = EtcdIPStorage(EtcdIPStorageConfig(endpoints=list(etcd_config.endpoints), prefix=etcd_config.prefix))
    try:
        yield storage
    finally:
        await storage.close()


def pool(name: str = "net-a", cidr: str = "10.0.1.0/24", **fields: object) -> ipam_pb2.Pool:
    return ipam_pb2.Pool(name=name, cidr=cidr, **fields)  # type: ignore[arg-type]


def allocate_request(
    pod: str,
    container: str = "",
    *,
    namespace: str = "default",
    node: str = "node-1",
    uid: str = "",
    kind: str = "",
    workload: str = "",
    pool_name: str = "",
    ip: str = "",
    ifname: str = "eth0",
) -> ipam_pb2.AllocateRequest:
    return ipam_pb2.AllocateRequest(
        owner=ipam_pb2.Owner(
            namespace=namespace, pod_name=pod, pod_uid=uid, workload_kind=kind, workload_name=workload
        ),
        container_id=container or f"c-{pod}",
        ifname=ifname,
        node=node,
        pool=pool_name,
        ip=ip,
    )
