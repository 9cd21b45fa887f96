"""The cloud-VPC IP provider against a VPC API server on loopback: its operations, retries,
timeouts and refusals; and tke-ipamd's use of it over real etcd: reserve and bind after the
storage decided, rollback on failure, and no second owner after a timed-out bind."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.pki import TestCA
from tests.support.waiting import wait_for
from tke.internal.ipamd.allocator import Block
from tke.internal.ipamd.ipam import IPAM, provider_owner
from tke.internal.ipamd.provider import ProviderRefused, ProviderUnavailable
from tke.internal.ipamd.storage import Lost, Stored
from tke.internal.rpc.errors import ApiError
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2
from tke.plugins.ip_providers import vpc as vpc_module
from tke.plugins.ip_providers.static import StaticProvider
from tke.plugins.ip_providers.vpc import VPCProvider
from tke.plugins.ip_storage.etcd import EtcdIPStorage, EtcdIPStorageConfig

from .conftest import allocate_request
from .vpc_server import Reservation, VPCServer, VPCState

SUBNETS = [
    {"id": "subnet-1", "cidr": "10.50.0.0/24", "gateway": "10.50.0.1"},
    {"id": "subnet-tiny", "cidr": "10.60.0.0/30", "gateway": "10.60.0.1"},
]


@pytest.fixture
def vpc() -> Iterator[VPCServer]:
    server = VPCServer(VPCState(subnets=SUBNETS))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def provider(vpc: VPCServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[VPCProvider]:
    monkeypatch.setenv("TKE_TEST_VPC_TOKEN", "vpc-token")
    made = VPCProvider(vpc.endpoint, token_env="TKE_TEST_VPC_TOKEN", timeout=0.3, retries=2, backoff=0.05)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def storages(etcd_config: EtcdConfig) -> AsyncIterator[list[EtcdIPStorage]]:
    """Two storages on one etcd prefix: two replicas' worth of connections."""
    config = EtcdIPStorageConfig(endpoints=list(etcd_config.endpoints), prefix=etcd_config.prefix)
    made = [EtcdIPStorage(config), EtcdIPStorage(config)]
    try:
        yield made
    finally:
        for s in made:
            await s.close()


def replica(storage: EtcdIPStorage, provider: VPCProvider) -> IPAM:
    return IPAM(storage, {"static": StaticProvider(), "vpc": provider}, cooldown=0)


def cloud_pool(name: str, subnet: dict[str, str]) -> ipam_pb2.Pool:
    return ipam_pb2.Pool(
        name=name, cidr=subnet["cidr"], provider=ipam_pb2.PoolProvider(name="vpc", subnet_id=subnet["id"])
    )


async def test_operations_retries_and_refusals(vpc: VPCServer, provider: VPCProvider) -> None:
    assert [s.id for s in await provider.subnets()] == ["subnet-1", "subnet-tiny"]
    vpc.state.fail["reserve"] = 2  # two 503s, then served: within the retries
    await provider.reserve("subnet-1", "10.50.0.9", "me")
    await provider.reserve("subnet-1", "10.50.0.9", "me")  # idempotent
    await provider.bind("subnet-1", "10.50.0.9", "node-1", "me")
    assert vpc.state.addresses["10.50.0.9"] == Reservation(owner="me", node="node-1")
    with pytest.raises(ProviderRefused):
        await provider.reserve("subnet-1", "10.50.0.9", "someone-else")
    with pytest.raises(ProviderRefused):
        await provider.bind("subnet-1", "10.50.0.9", "node-2", "someone-else")
    await provider.release("subnet-1", "10.50.0.9", "someone-else")  # not theirs: left alone
    assert "10.50.0.9" in vpc.state.addresses
    await provider.release("subnet-1", "10.50.0.9", "me")
    await provider.release("subnet-1", "10.50.0.9", "me")  # already gone: fine
    assert vpc.state.addresses == {}

    vpc.state.broken.add("reserve")
    before = len(vpc.state.calls)
    with pytest.raises(ProviderUnavailable):
        await provider.reserve("subnet-1", "10.50.0.10", "me")
    assert len(vpc.state.calls) - before == 3  # the first try and two retries


async def test_slow_answers_time_out(vpc: VPCServer, provider: VPCProvider) -> None:
    vpc.state.delay["reserve"] = 1.0
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable):
        await provider.reserve("subnet-1", "10.50.0.11", "me")
    assert time.monotonic() - started < 3 * 1.0  # sooner than three answers the server delays


async def test_bad_token_is_refused(vpc: VPCServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TKE_TEST_VPC_TOKEN", "wrong")
    wrong = VPCProvider(vpc.endpoint, token_env="TKE_TEST_VPC_TOKEN", timeout=0.3, retries=0)
    try:
        with pytest.raises(ProviderRefused):
            await wrong.subnets()
    finally:
        await wrong.close()


async def test_allocation_reserves_and_binds_then_release_frees(
    vpc: VPCServer, provider: VPCProvider, storages: list[EtcdIPStorage]
) -> None:
    ipam = replica(storages[0], provider)
    with pytest.raises(ApiError) as err:
        await ipam.create_pool(cloud_pool("cloud", {"id": "subnet-404", "cidr": "10.50.0.0/24"}))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    await ipam.create_pool(cloud_pool("cloud", SUBNETS[0]))
    got = (await ipam.allocate(allocate_request("web", node="node-1"))).allocation
    assert vpc.state.addresses[got.ip] == Reservation(owner=provider_owner(got), node="node-1")
    await ipam.release("c-web", "eth0")
    assert vpc.state.addresses == {}


async def test_bind_failure_rolls_back(vpc: VPCServer, provider: VPCProvider, storages: list[EtcdIPStorage]) -> None:
    ipam = replica(storages[0], provider)
    await ipam.create_pool(cloud_pool("cloud", SUBNETS[0]))
    vpc.state.broken.add("bind")
    with pytest.raises(ApiError) as err:
        await ipam.allocate(allocate_request("web"))
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert vpc.state.addresses == {}
    assert (await ipam.get_pool("cloud")).status.allocated == 0
    with pytest.raises(ApiError):
        await ipam.get_by_attachment("c-web", "eth0")


async def test_timed_out_bind_never_yields_two_owners(
    vpc: VPCServer, provider: VPCProvider, storages: list[EtcdIPStorage]
) -> None:
    """galaxy's failure: a bind timed out, the allocation was retried elsewhere, and the first
    attempt's late effects hit the winner. Here the late binds carry the loser's token."""
    a, b = replica(storages[0], provider), replica(storages[1], provider)
    await a.create_pool(cloud_pool("tiny", SUBNETS[1]))  # exactly one address: 10.60.0.2
    vpc.state.delay["bind"] = 1.0
    with pytest.raises(ApiError) as err:
        await a.allocate(allocate_request("db-0", "c1", node="node-1"))
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    vpc.state.delay["bind"] = 0.0
    # The runtime retries the ADD; the pod landed on another node, served by another replica.
    won = (await b.allocate(allocate_request("db-0", "c1", node="node-2"))).allocation
    assert won.ip == "10.60.0.2"

    # The first attempt's late binds arrive once their delay is over, and are refused.
    await wait_for(lambda: vpc.idle() and ("bind", "10.60.0.2") in vpc.state.refused, what="the late binds")
    assert vpc.state.addresses == {"10.60.0.2": Reservation(owner=provider_owner(won), node="node-2")}
    held = await a.get_by_attachment("c1", "eth0")
    assert (held.ip, held.node) == ("10.60.0.2", "node-2")


async def test_failed_rollback_keeps_the_address_until_the_container_is_released(
    vpc: VPCServer, provider: VPCProvider, storages: list[EtcdIPStorage]
) -> None:
    a, b = replica(storages[0], provider), replica(storages[1], provider)
    await a.create_pool(cloud_pool("tiny", SUBNETS[1]))
    vpc.state.broken.update({"bind", "release"})
    with pytest.raises(ApiError):
        await a.allocate(allocate_request("first", "c1"))
    # The VPC may still hold it for the first allocation, so nobody else may have it.
    assert (await b.get_by_attachment("c1", "eth0")).ip == "10.60.0.2"
    with pytest.raises(ApiError) as err:
        await b.allocate(allocate_request("second", "c2"))
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    vpc.state.broken.clear()
    # A retried ADD of the same container gets the kept address, now reserved and bound.
    retried = (await b.allocate(allocate_request("first", "c1"))).allocation
    assert retried.ip == "10.60.0.2"
    assert vpc.state.addresses["10.60.0.2"] == Reservation(owner=provider_owner(retried), node="node-1")
    assert (await b.release("c1", "eth0")).found  # the runtime's DEL
    assert vpc.state.addresses == {}
    assert (await b.allocate(allocate_request("second", "c2"))).allocation.ip == "10.60.0.2"


async def test_answers_larger_than_the_limit_are_failed_attempts(
    vpc: VPCServer, provider: VPCProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    vpc.state.padding = 64 * 1024  # every answer carries this many bytes more
    assert len(await provider.subnets()) == 2
    monkeypatch.setattr(vpc_module, "MAX_ANSWER", 1024)
    with pytest.raises(ProviderUnavailable, match="larger than 1024 bytes after 3 attempts"):
        await provider.subnets()


async def test_https_with_the_configured_ca_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = TestCA(tmp_path / "pki")
    server = VPCServer(VPCState(subnets=SUBNETS), tls=ca.issue("vpc", common_name="vpc", hosts=("127.0.0.1",)))
    server.start()
    monkeypatch.setenv("TKE_TEST_VPC_TOKEN", "vpc-token")
    trusting = VPCProvider(server.endpoint, token_env="TKE_TEST_VPC_TOKEN", ca_file=ca.ca_file, timeout=10, retries=0)
    system = VPCProvider(server.endpoint, token_env="TKE_TEST_VPC_TOKEN", timeout=10, retries=0)
    try:
        assert server.endpoint.startswith("https://")
        assert [s.id for s in await trusting.subnets()] == ["subnet-1", "subnet-tiny"]
        with pytest.raises(ProviderUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await system.subnets()  # the system's trust store does not know the test CA
    finally:
        await trusting.close()
        await system.close()
        server.stop()


async def test_release_racing_a_reattach_keeps_the_reservation(
    vpc: VPCServer, provider: VPCProvider, storages: list[EtcdIPStorage]
) -> None:
    """ReleaseWorkload frees a retained address at the provider, and meanwhile its owner comes
    back on another replica: the storage keeps the owner's address, so the provider must too."""
    a, b = replica(storages[0], provider), replica(storages[1], provider)
    await a.create_pool(cloud_pool("cloud", SUBNETS[0]))
    await a.put_binding(
        ipam_pb2.Binding(
            workload=ipam_pb2.WorkloadRef(namespace="default", kind="StatefulSet", name="db"),
            release_policy=ipam_pb2.RELEASE_POLICY_IMMUTABLE,
        )
    )
    db_0 = {"kind": "StatefulSet", "workload": "db"}  # as cni-switch names the workload
    first = (await a.allocate(allocate_request("db-0", "c1", node="node-1", **db_0))).allocation
    await a.release("c1", "eth0")
    release = storages[0].release
    came_back: list[ipam_pb2.Allocation] = []

    async def owner_returns_first(current: Stored, block: Block) -> Lost | int:
        came_back.append((await b.allocate(allocate_request("db-0", "c2", node="node-2", **db_0))).allocation)
        return await release(current, block)

    storages[0].release = owner_returns_first  # type: ignore[method-assign]
    w = ipam_pb2.WorkloadRef(namespace="default", kind="StatefulSet", name="db")
    released, _ = await a.release_workload(w, deleted=True, replicas=None, keep=set(), force=False)
    assert released == [] and came_back[0].ip == first.ip
    assert vpc.state.addresses[first.ip] == Reservation(owner=provider_owner(first), node="node-2")


async def test_gc_goes_on_when_the_provider_fails_for_one_address(
    vpc: VPCServer, provider: VPCProvider, storages: list[EtcdIPStorage]
) -> None:
    ipam = replica(storages[0], provider)
    await ipam.create_pool(cloud_pool("cloud", SUBNETS[0]))
    await ipam.create_pool(ipam_pb2.Pool(name="local", cidr="10.70.0.0/24"))  # static: no provider calls
    await ipam.allocate(allocate_request("a", "c-cloud", pool_name="cloud"))
    await ipam.allocate(allocate_request("b", "c-local", pool_name="local"))
    vpc.state.broken.add("release")
    collected = await ipam.garbage_collect("node-1", set(), dry_run=False, min_age=0)
    assert [a.container_id for a in collected] == ["c-local"]
    vpc.state.broken.clear()
    collected = await ipam.garbage_collect("node-1", set(), dry_run=False, min_age=0)
    assert [a.container_id for a in collected] == ["c-cloud"]
    assert vpc.state.addresses == {}
