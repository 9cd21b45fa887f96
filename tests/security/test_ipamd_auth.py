"""Rule: tke-ipamd's TCP API runs the apiserver's authentication and authorization. Pools are
the platform's (only platform administrators create, update or delete them); a binding or an
allocation belongs to the tenant that owns its namespace ([tcp.tenants]), and calls that name
no namespace act on every tenant; the node's CNI plugins keep allocating over the unix socket,
which only its owner can reach, in a directory nobody else can write to. Bad configurations
(an open TCP listener, a socket others may use, namespaces given to two tenants) stop the
daemon at start with the reason. A pool limited to some namespaces hands out nothing to others.

A real tke-ipamd process (TLS, the token-file authenticator and the policy centre reading the
same etcd as an in-process apiserver, through which the platform administrator grants each
tenant admin the `admin` role of its own tenant) is probed as each tenant would probe it."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2

from tests.security.tenancy import ALICE, BOB, ROOT, Caller, start_secured, tokens_file
from tests.support.apiserver import stop
from tests.support.ipamd_daemon import IpamdProcess, refused_at_start
from tests.support.pki import TestCA
from tests.support.ports import free_port
from tests.support.rpc import detail_of, expect_error, health_check
from tests.support.waiting import wait_for
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc

DENIED = grpc.StatusCode.PERMISSION_DENIED
TENANTS = 'tenants = { team-a = ["shop", "shop-*"], team-b = ["blog"] }\n'


@dataclass
class Ipamd:
    process: IpamdProcess
    address: str
    ca: TestCA

    def stub(self, caller: Caller | None) -> ipam_pb2_grpc.IPAMServiceAsyncStub:
        creds = grpc.ssl_channel_credentials(Path(self.ca.ca_file).read_bytes())
        if caller is not None:
            creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(caller.token))
        return ipam_pb2_grpc.IPAMServiceStub(grpc.aio.secure_channel(self.address, creds))

    async def tcp_serving(self) -> bool:
        """The unix socket is served first: the TCP listener follows once its auth is built."""
        channel = grpc.aio.secure_channel(
            self.address, grpc.ssl_channel_credentials(Path(self.ca.ca_file).read_bytes())
        )
        try:
            answer = await health_check(channel)(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            return False
        finally:
            await channel.close()
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    def local(self) -> ipam_pb2_grpc.IPAMServiceAsyncStub:
        """The node's unix socket, as the CNI plugins call it: no credentials."""
        return ipam_pb2_grpc.IPAMServiceStub(grpc.aio.insecure_channel(self.process.target))


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Short (unix socket paths are limited to 107 bytes) and private."""
    path = Path(tempfile.mkdtemp(prefix="sec-ipamd-", dir="/tmp"))
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
async def ipamd(etcd_config: EtcdConfig, workdir: Path) -> AsyncIterator[Ipamd]:
    api = await start_secured(etcd_config, workdir)  # the tenant admins' role bindings, in etcd
    ca = TestCA(workdir / "pki")
    server = ca.issue("ipamd", common_name="tke-ipamd", hosts=("127.0.0.1",))
    address = f"127.0.0.1:{free_port()}"
    endpoints = ", ".join(f'"{e}"' for e in etcd_config.endpoints)
    auth = (
        TENANTS
        + f'[[tcp.auth.authenticators]]\nplugin = "token-file"\noptions = {{ path = "{tokens_file(workdir)}" }}\n'
        + '[[tcp.auth.authorizers]]\nplugin = "policy"\n'
        + f'[tcp.auth_etcd]\nendpoints = [{endpoints}]\nprefix = "{etcd_config.prefix}"\n'
    )
    process = IpamdProcess(
        workdir,
        endpoints=list(etcd_config.endpoints),
        prefix=etcd_config.prefix,
        tcp=address,
        cert_file=server.cert_file,
        key_file=server.key_file,
        tcp_extra=auth,
    )
    try:
        process.start()
        running = Ipamd(process, address, ca)
        await wait_for(running.tcp_serving, what="ipamd's TCP listener")
        yield running
    finally:
        process.stop()
        await stop(api)


def binding(namespace: str, name: str = "db") -> ipam_pb2.PutBindingRequest:
    workload = ipam_pb2.WorkloadRef(namespace=namespace, kind="StatefulSet", name=name)
    return ipam_pb2.PutBindingRequest(binding=ipam_pb2.Binding(workload=workload, pool="net"))


def allocate(namespace: str, pod: str, container: str) -> ipam_pb2.AllocateRequest:
    return ipam_pb2.AllocateRequest(
        owner=ipam_pb2.Owner(namespace=namespace, pod_name=pod, pod_uid=f"uid-{pod}"),
        container_id=container,
        ifname="eth0",
        node="node-1",
    )


async def denied(call: Any, tenant: str) -> None:
    """Refused: PERMISSION_DENIED naming the tenant, or, for a call naming an object of a tenant
    the caller has no rights in, NOT_FOUND (the platform's tenant isolation: whether it exists
    is not revealed)."""
    try:
        await call
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            assert tenant not in ("*",), f"a platform-wide object answered NOT_FOUND: {err.details()}"
            return
        assert err.code() == DENIED, f"expected PERMISSION_DENIED or NOT_FOUND, got {err.code().name}: {err.details()}"
        assert f"in tenant {tenant!r}" in (err.details() or ""), err.details()
        return
    raise AssertionError(f"the call was allowed (expected a refusal in tenant {tenant!r})")


async def test_pools_are_the_platforms(ipamd: Ipamd) -> None:
    anonymous, root, alice = ipamd.stub(None), ipamd.stub(ROOT), ipamd.stub(ALICE)
    pool = ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net", cidr="10.20.0.0/24"))
    await expect_error(anonymous.CreatePool(pool), grpc.StatusCode.UNAUTHENTICATED)
    await expect_error(anonymous.ListPools(ipam_pb2.ListPoolsRequest()), grpc.StatusCode.UNAUTHENTICATED)
    # A tenant admin is admin of its tenant, not of the platform's pools.
    await denied(alice.CreatePool(pool), "*")
    await root.CreatePool(pool)
    change = ipam_pb2.UpdatePoolRequest(pool=ipam_pb2.Pool(name="net", node_names=["mine"]))
    await denied(alice.UpdatePool(change), "*")
    await denied(alice.DeletePool(ipam_pb2.DeletePoolRequest(name="net")), "*")
    assert [p.name for p in (await alice.ListPools(ipam_pb2.ListPoolsRequest())).pools] == ["net"]
    assert not (await alice.GetPool(ipam_pb2.GetPoolRequest(name="net"))).node_names
    await root.UpdatePool(change)
    await root.DeletePool(ipam_pb2.DeletePoolRequest(name="net"))


async def test_bindings_and_allocations_belong_to_the_namespaces_tenant(ipamd: Ipamd) -> None:
    root, alice, bob = ipamd.stub(ROOT), ipamd.stub(ALICE), ipamd.stub(BOB)
    await root.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net", cidr="10.21.0.0/24")))
    # Alice manages her namespaces' bindings, exact and by prefix; nobody else's.
    await alice.PutBinding(binding("shop"))
    await alice.PutBinding(binding("shop-web", "web"))
    await bob.PutBinding(binding("blog"))
    await denied(alice.PutBinding(binding("blog")), "team-b")
    await denied(alice.PutBinding(binding("kube-system")), "*")  # owned by no tenant: the platform's
    await denied(bob.PutBinding(binding("shop")), "team-a")  # squatting on alice's namespace
    await denied(bob.PutBinding(binding("shop-new")), "team-a")
    shop_db = ipam_pb2.WorkloadRef(namespace="shop", kind="StatefulSet", name="db")
    await denied(bob.DeleteBinding(ipam_pb2.DeleteBindingRequest(workload=shop_db)), "team-a")
    await denied(bob.GetBinding(ipam_pb2.GetBindingRequest(workload=shop_db)), "team-a")
    await denied(bob.LookupBinding(ipam_pb2.LookupBindingRequest(namespace="shop", pod_name="db-0")), "team-a")
    await denied(bob.ListBindings(ipam_pb2.ListBindingsRequest()), "*")
    assert [
        b.workload.namespace for b in (await bob.ListBindings(ipam_pb2.ListBindingsRequest(namespace="blog"))).bindings
    ] == ["blog"]
    assert (await alice.GetBinding(ipam_pb2.GetBindingRequest(workload=shop_db))).pool == "net"

    # Addresses: alice allocates for her pods; bob can neither allocate for them nor free them.
    got = await alice.Allocate(allocate("shop", "db-0", "c-alice"))
    await denied(bob.Allocate(allocate("shop", "db-1", "c-bob")), "team-a")
    await denied(
        bob.ReleaseWorkload(ipam_pb2.ReleaseWorkloadRequest(workload=shop_db, deleted=True, force=True)), "team-a"
    )
    await denied(bob.Release(ipam_pb2.ReleaseRequest(container_id="c-alice", ifname="eth0")), "*")
    await denied(bob.GarbageCollect(ipam_pb2.GarbageCollectRequest(node="node-1", min_age_seconds=0)), "*")
    attachment = ipam_pb2.Attachment(container_id="c-alice", ifname="eth0")
    await denied(bob.GetAllocation(ipam_pb2.GetAllocationRequest(attachment=attachment)), "*")
    await denied(bob.ListAllocations(ipam_pb2.ListAllocationsRequest()), "*")
    await denied(bob.ListAllocations(ipam_pb2.ListAllocationsRequest(namespace="shop")), "team-a")
    listed = await alice.ListAllocations(ipam_pb2.ListAllocationsRequest(namespace="shop"))
    assert [a.ip for a in listed.allocations] == [got.allocation.ip]

    # The node's CNI plugins, on the unix socket, act for every namespace as before.
    local = ipamd.local()
    node = await local.Allocate(allocate("blog", "web-0", "c-node"))
    assert (await local.Release(ipam_pb2.ReleaseRequest(container_id="c-node", ifname="eth0"))).found
    assert node.allocation.ip != got.allocation.ip

    # A pool given to team-a's namespaces: bob, who may allocate in blog, cannot take from it.
    only_shop = ipam_pb2.Pool(name="shop-only", cidr="10.22.0.0/24", namespaces=["shop", "shop-*"])
    await root.CreatePool(ipam_pb2.CreatePoolRequest(pool=only_shop))
    taking = allocate("blog", "web-1", "c-bob-2")
    taking.pool = "shop-only"
    err = await expect_error(bob.Allocate(taking), DENIED)
    assert detail_of(err, error_details_pb2.ErrorInfo).reason == "POOL_NOT_ALLOWED", err.details()
    assert (await bob.Allocate(allocate("blog", "web-1", "c-bob-2"))).allocation.pool == "net"
    mine = allocate("shop", "db-2", "c-alice-2")
    mine.pool = "shop-only"
    assert (await alice.Allocate(mine)).allocation.pool == "shop-only"


async def test_the_unix_socket_is_its_owners_only(ipamd: Ipamd) -> None:
    info = os.stat(ipamd.process.socket)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid()
    directory = os.stat(Path(ipamd.process.socket).parent)
    assert not directory.st_mode & 0o022


def test_unsafe_configurations_stop_ipamd_at_start(workdir: Path) -> None:
    sock = workdir / "private" / "ipamd.sock"
    ca = TestCA(workdir / "pki")
    server = ca.issue("ipamd", common_name="tke-ipamd", hosts=("127.0.0.1",))
    tls = f'cert_file = "{server.cert_file}"\nkey_file = "{server.key_file}"\n'
    tcp = f'socket = "{sock}"\n[tcp]\naddress = "127.0.0.1:{free_port()}"\n{tls}'
    assert "without [tcp.auth] authenticators" in refused_at_start(workdir, tcp)
    overlapping = tcp + 'insecure = true\ntenants = { team-a = ["shop-*"], team-b = ["shop-web"] }\n'
    assert "matches shop-*" in refused_at_start(workdir, overlapping)
    assert "lets other users in" in refused_at_start(workdir, f'socket = "{sock}"\nsocket_mode = 0o660\n')
    shared = workdir / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could swap the socket for their own
    assert "writable by other users" in refused_at_start(workdir, f'socket = "{shared / "ipamd.sock"}"\n')
    assert not (shared / "ipamd.sock").exists()
