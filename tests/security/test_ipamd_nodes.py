"""Rule: a caller that speaks for a node acts on that node's addresses only (the node rule,
internal/ipamd/noderule.py, Kubernetes' NodeRestriction for tke-ipamd). Over TCP a node identity
(user system:node:<name> in group system:nodes) may Allocate and GarbageCollect for its node,
Release and GetAllocation its node's allocations, list its node's allocations, and nothing of
another node's, and no ReleaseWorkload, whatever authorization grants it; on the unix socket of
a tke-ipamd that knows its node (`node_name`) every caller is held to that node the same way,
while a socket without `node_name` serves every node, as before. A refusal is PERMISSION_DENIED
with ErrorInfo NODE_RESTRICTED, and changes nothing. A node also gets a pod's fixed address
(which follows the pod from node to node) only while the Kubernetes API (the stand-in) says the
pod is bound to it, and only for the workload the API says the pod belongs to (ErrorInfo
NOT_THE_PODS_WORKLOAD otherwise); without [kubernetes] it takes over none attached on another node.
Every new address of a node's, pod-delete ones too, is for a pod the API says is bound to it (a
node allocating for made-up pods drained a shared pool), and a node holds at most
max_allocations_per_node addresses (RESOURCE_EXHAUSTED, NODE_ALLOCATION_LIMIT), with or without
[kubernetes]; other nodes, operators and a socket without `node_name` are not held back.

Real tke-ipamd processes over the session's etcd, one storage shared as in the DaemonSet
deployment. The TCP daemon authorizes with `allow-all`: the rule holds even for a node identity
that authorization lets do everything, and an operator (no node) keeps what authorization gives.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from lightkube.resources.core_v1 import Pod

from tests.ipamd.kubernetes import NS, create, granted, ipamd_kubeconfig, kube_server
from tests.support.ipamd_daemon import IpamdProcess, refused_at_start
from tests.support.kube import objects
from tests.support.kube.running import StandIn
from tests.support.pki import TestCA
from tests.support.ports import free_port
from tests.support.rpc import detail_of, expect_error
from tests.support.waiting import wait_for
from tke.internal.provider.kube.api import ClusterAPI
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc

DENIED = grpc.StatusCode.PERMISSION_DENIED
TOKENS = {
    "operator": "operator-token-0123456789,operator,u-op,,default",
    "node-a": "node-a-token-0123456789,system:node:node-a,u-na,system:nodes,default",
    "node-b": "node-b-token-0123456789,system:node:node-b,u-nb,system:nodes,default",
    # A node identity without a name (a certificate or token line issued wrong): a node, of no node.
    "nameless": "nameless-token-0123456789,system:node:,u-nn,system:nodes,default",
}
Stub = Any  # ipam_pb2_grpc.IPAMServiceAsyncStub
Request = ipam_pb2.AllocateRequest


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sec-nodes-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def allocate(node: str, container: str, pod: str) -> ipam_pb2.AllocateRequest:
    return ipam_pb2.AllocateRequest(
        owner=ipam_pb2.Owner(namespace="shop", pod_name=pod, pod_uid=f"uid-{pod}"),
        container_id=container,
        ifname="eth0",
        node=node,
    )


def release(container: str) -> ipam_pb2.ReleaseRequest:
    return ipam_pb2.ReleaseRequest(container_id=container, ifname="eth0")


def gc(node: str) -> ipam_pb2.GarbageCollectRequest:
    return ipam_pb2.GarbageCollectRequest(node=node, min_age_seconds=0)


def by_attachment(container: str) -> ipam_pb2.GetAllocationRequest:
    return ipam_pb2.GetAllocationRequest(attachment=ipam_pb2.Attachment(container_id=container, ifname="eth0"))


async def restricted(call: Any, own: str, other: str) -> None:
    """Refused by the node rule: PERMISSION_DENIED, NODE_RESTRICTED, naming both nodes."""
    err = await expect_error(call, DENIED)
    info = detail_of(err, error_details_pb2.ErrorInfo)
    assert info.reason == "NODE_RESTRICTED", err.details()
    assert info.metadata["node"] == own and info.metadata.get("requested_node", "") == other
    assert f"acts on node {own!r} only" in (err.details() or "")
    if other:
        assert repr(other) in (err.details() or "")


async def node_of(stub: Stub, node: str) -> list[tuple[str, str]]:
    listed = await stub.ListAllocations(ipam_pb2.ListAllocationsRequest(node=node))
    return sorted((a.container_id, a.ip) for a in listed.allocations)


@pytest.fixture
async def tcp(etcd_config: EtcdConfig, workdir: Path) -> AsyncIterator[dict[str, Stub]]:
    """A tke-ipamd with TLS, static tokens and allow-all, without Kubernetes: a stub per caller."""
    async with tcp_ipamd(etcd_config, workdir) as stubs:
        yield stubs


@pytest.fixture
def kube(workdir: Path) -> Iterator[StandIn]:
    with kube_server(workdir) as standin:
        yield standin


@pytest.fixture
async def admin(kube: StandIn) -> AsyncIterator[ClusterAPI]:
    """The cluster's administrator, playing the StatefulSet controller and the scheduler."""
    async with await granted(kube) as api:
        yield api


@pytest.fixture
async def tcp_kube(etcd_config: EtcdConfig, workdir: Path, kube: StandIn) -> AsyncIterator[dict[str, Stub]]:
    """The same tke-ipamd with [kubernetes]: the stand-in, as the network add-on's identity."""
    (workdir / "kubeconfig").write_text(ipamd_kubeconfig(kube))
    async with tcp_ipamd(etcd_config, workdir, f'[kubernetes]\nkubeconfig = "{workdir / "kubeconfig"}"\n') as stubs:
        yield stubs


@contextlib.asynccontextmanager
async def tcp_ipamd(etcd_config: EtcdConfig, workdir: Path, extra: str = "") -> AsyncIterator[dict[str, Stub]]:
    """A tke-ipamd with TLS, static tokens and allow-all (`extra`: more top-level TOML): a stub per caller."""
    ca = TestCA(workdir / "pki")
    server = ca.issue("ipamd", common_name="tke-ipamd", hosts=("127.0.0.1",))
    tokens = workdir / "tokens.csv"
    tokens.write_text("\n".join(TOKENS.values()) + "\n")
    address = f"127.0.0.1:{free_port()}"
    process = IpamdProcess(
        workdir,
        endpoints=list(etcd_config.endpoints),
        prefix=etcd_config.prefix,
        extra=extra,
        tcp=address,
        cert_file=server.cert_file,
        key_file=server.key_file,
        tcp_extra=f'[[tcp.auth.authenticators]]\nplugin = "token-file"\noptions = {{ path = "{tokens}" }}\n'
        '[[tcp.auth.authorizers]]\nplugin = "allow-all"\n',
    )
    channels: list[grpc.aio.Channel] = []
    try:
        process.start()  # the unix socket serves first; TCP follows once its auth is built
        stubs = {}
        for name, line in TOKENS.items():
            creds = grpc.composite_channel_credentials(
                grpc.ssl_channel_credentials(Path(ca.ca_file).read_bytes()),
                grpc.access_token_call_credentials(line.split(",")[0]),
            )
            channels.append(grpc.aio.secure_channel(address, creds))
            stubs[name] = ipam_pb2_grpc.IPAMServiceStub(channels[-1])

        async def tcp_serving() -> bool:
            try:
                await stubs["operator"].ListPools(ipam_pb2.ListPoolsRequest(), timeout=2)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                return False
            return True

        await wait_for(tcp_serving, what="ipamd's TCP listener")
        yield stubs
    finally:
        for channel in channels:
            await channel.close()
        process.stop()


async def test_a_node_identity_acts_on_its_own_node_only(tcp: dict[str, Stub]) -> None:
    operator, a, b = tcp["operator"], tcp["node-a"], tcp["node-b"]
    await operator.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net", cidr="10.30.0.0/24")))
    await b.Allocate(allocate("node-b", "cb-1", "web-1"))
    await b.Allocate(allocate("node-b", "cb-2", "web-2"))
    before = await node_of(operator, "node-b")
    assert len(before) == 2

    # Node A cannot touch node B's addresses, by any call.
    await restricted(a.Allocate(allocate("node-b", "ca-x", "web-x")), "node-a", "node-b")
    # Naming B's container and pod for its own node: B's address is not handed over as "reused".
    await restricted(a.Allocate(allocate("node-a", "cb-1", "web-1")), "node-a", "node-b")
    await restricted(a.GarbageCollect(gc("node-b")), "node-a", "node-b")
    await restricted(a.GarbageCollect(ipam_pb2.GarbageCollectRequest(node="node-b", dry_run=True)), "node-a", "node-b")
    await restricted(a.Release(release("cb-1")), "node-a", "node-b")
    await restricted(a.GetAllocation(by_attachment("cb-1")), "node-a", "node-b")
    ip = before[0][1]
    await restricted(a.GetAllocation(ipam_pb2.GetAllocationRequest(address=f"net/{ip}")), "node-a", "node-b")
    await restricted(a.ListAllocations(ipam_pb2.ListAllocationsRequest(node="node-b")), "node-a", "node-b")
    await restricted(a.ListAllocations(ipam_pb2.ListAllocationsRequest()), "node-a", "")
    workload = ipam_pb2.WorkloadRef(namespace="shop", kind="Pod", name="web-1")
    await restricted(
        a.ReleaseWorkload(ipam_pb2.ReleaseWorkloadRequest(workload=workload, deleted=True, force=True)), "node-a", ""
    )
    assert await node_of(operator, "node-b") == before  # nothing changed
    assert not (await operator.ListAllocations(ipam_pb2.ListAllocationsRequest(node="node-a"))).allocations

    # Its own node: everything, as the CNI plugins need.
    mine = (await a.Allocate(allocate("node-a", "ca-1", "web-3"))).allocation
    assert (await a.GetAllocation(by_attachment("ca-1"))).ip == mine.ip
    assert await node_of(a, "node-a") == [("ca-1", mine.ip)]
    assert (await a.Release(release("ca-1"))).found
    await a.Allocate(allocate("node-a", "ca-2", "web-4"))
    collected = (await a.GarbageCollect(gc("node-a"))).collected
    assert [c.container_id for c in collected] == ["ca-2"]
    assert await node_of(operator, "node-b") == before

    # An operator (no node) keeps what authorization gives it: every node.
    assert (await operator.Release(release("cb-1"))).found
    assert [c.container_id for c in (await operator.GarbageCollect(gc("node-b"))).collected] == ["cb-2"]
    assert await node_of(operator, "node-b") == []


async def test_a_node_identity_without_a_name_reaches_no_node(tcp: dict[str, Stub]) -> None:
    """`system:node:` is a node (the rule takes its rights away) whose name is empty: an empty
    node in a request means "every node" to ListAllocations, so it must match nothing."""
    operator, nameless = tcp["operator"], tcp["nameless"]
    await operator.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net", cidr="10.31.0.0/24")))
    await operator.Allocate(allocate("node-b", "cb-1", "web-1"))
    before = await node_of(operator, "node-b")
    await restricted(nameless.ListAllocations(ipam_pb2.ListAllocationsRequest()), "", "")
    await restricted(nameless.ListAllocations(ipam_pb2.ListAllocationsRequest(node="node-b")), "", "node-b")
    await restricted(nameless.GetAllocation(by_attachment("cb-1")), "", "node-b")
    await restricted(nameless.Release(release("cb-1")), "", "node-b")
    await restricted(nameless.GarbageCollect(gc("node-b")), "", "node-b")
    assert await node_of(operator, "node-b") == before


def db0(node: str, container: str, uid: str = "", *, workload: bool = False) -> ipam_pb2.AllocateRequest:
    """tke-ipamc's Allocate for StatefulSet db's pod db-0 (kubelet names the pod and its uid;
    `workload`: the runtime names the workload too, as it must without [kubernetes])."""
    owner = ipam_pb2.Owner(namespace=NS, pod_name="db-0", pod_uid=uid)
    if workload:
        owner.workload_kind, owner.workload_name = "StatefulSet", "db"
    return ipam_pb2.AllocateRequest(owner=owner, container_id=container, ifname="eth0", node=node)


async def fixed_pool(operator: Stub, cidr: str) -> None:
    await operator.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="fixed", cidr=cidr)))
    binding = ipam_pb2.Binding(workload=ipam_pb2.WorkloadRef(namespace=NS, kind="StatefulSet", name="db"),
                               pool="fixed", release_policy=ipam_pb2.RELEASE_POLICY_IMMUTABLE)  # fmt: skip
    await operator.PutBinding(ipam_pb2.PutBindingRequest(binding=binding))


async def test_a_node_takes_over_a_fixed_address_only_for_a_pod_bound_to_it(
    tcp_kube: dict[str, Stub], admin: ClusterAPI
) -> None:
    operator, a, b = tcp_kube["operator"], tcp_kube["node-a"], tcp_kube["node-b"]
    await fixed_pool(operator, "10.32.0.0/24")
    sts = await create(admin, objects.stateful_set("db", NS, 1))
    uid = (await create(admin, objects.pod("db-0", NS, node="node-a", owner=sts)))["metadata"]["uid"]
    ip = (await a.Allocate(db0("node-a", "ca-1", uid))).allocation.ip
    on_a = [("ca-1", ip)]

    # Node B names node A's running pod for its own node: the address would leave a container
    # that still runs on A (two pods, one address). Refused while the pod is bound to A.
    for request in (db0("node-b", "cb-1", uid), db0("node-b", "cb-1")):
        await restricted(b.Allocate(request), "node-b", "node-a")
    assert await node_of(operator, "node-a") == on_a
    assert await node_of(operator, "node-b") == []

    # A dead node A: the StatefulSet's pod is deleted and created again, bound to B (a new uid).
    await admin.client.delete(Pod, "db-0", namespace=NS)
    moved_uid = (await create(admin, objects.pod("db-0", NS, node="node-b", owner=sts)))["metadata"]["uid"]
    assert moved_uid != uid
    moved = await b.Allocate(db0("node-b", "cb-1", moved_uid))
    assert moved.reused and (moved.allocation.ip, moved.allocation.node) == (ip, "node-b")
    assert await node_of(operator, "node-b") == [("cb-1", ip)]
    # Node A's kubelet, still running the old pod, cannot take it back.
    err = await expect_error(a.Allocate(db0("node-a", "ca-2", uid)), DENIED)
    assert detail_of(err, error_details_pb2.ErrorInfo).reason == "NODE_RESTRICTED"
    assert f"the request's pod uid {uid} is not pod {NS}/db-0's" in (err.details() or "")
    assert await node_of(operator, "node-b") == [("cb-1", ip)]

    # An operator (no node) moves it, as before.
    back = await operator.Allocate(db0("node-a", "co-1", moved_uid))
    assert (back.allocation.ip, back.allocation.node) == (ip, "node-a")


def pod_of(node: str, container: str, pod: str, uid: str, *, kind: str = "", name: str = "") -> Request:
    """tke-ipamc's Allocate for pod `pod` (uid `uid`) on `node`; `kind`/`name`: the workload the
    runtime names for it (TKE_WORKLOAD_KIND, TKE_WORKLOAD_NAME), else ipamd resolves it."""
    owner = ipam_pb2.Owner(namespace=NS, pod_name=pod, pod_uid=uid, workload_kind=kind, workload_name=name)
    return ipam_pb2.AllocateRequest(owner=owner, container_id=container, ifname="eth0", node=node)


async def test_a_node_takes_a_workloads_fixed_address_only_for_that_workloads_own_pod(
    tcp_kube: dict[str, Stub], admin: ClusterAPI
) -> None:
    """Deployments' pods get new names, so a Deployment's fixed addresses are the workload's: its
    next pod, on any node, takes over one a gone pod left retained. A node must not get one by
    naming that Deployment for a pod of another workload bound to it."""
    operator, a, b = tcp_kube["operator"], tcp_kube["node-a"], tcp_kube["node-b"]
    await operator.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="fixed", cidr="10.34.0.0/24")))
    replica_sets = {}
    for name in ("api", "web"):
        binding = ipam_pb2.Binding(workload=ipam_pb2.WorkloadRef(namespace=NS, kind="Deployment", name=name),
                                   pool="fixed", release_policy=ipam_pb2.RELEASE_POLICY_IMMUTABLE)  # fmt: skip
        await operator.PutBinding(ipam_pb2.PutBindingRequest(binding=binding))
        deployment = await create(admin, objects.deployment(name, NS, 1))
        replica_sets[name] = await create(admin, objects.replica_set(f"{name}-6b7d9", NS, 1, owner=deployment))

    async def running(pod: str, workload: str, node: str) -> str:
        """A pod of `workload`'s ReplicaSet, bound to `node`: its uid."""
        made = await create(admin, objects.pod(pod, NS, node=node, app=workload, owner=replica_sets[workload]))
        return str(made["metadata"]["uid"])

    # Deployment api's pod on node A gets a fixed address (its workload resolved through the
    # ReplicaSet), and leaves it retained for api's next pod.
    api_uid = await running("api-6b7d9-aaaaa", "api", "node-a")
    first = (await a.Allocate(pod_of("node-a", "ca-1", "api-6b7d9-aaaaa", api_uid))).allocation
    assert (first.owner.workload_kind, first.owner.workload_name) == ("Deployment", "api")
    assert (await a.Release(release("ca-1"))).retained
    await admin.client.delete(Pod, "api-6b7d9-aaaaa", namespace=NS)

    # Node B names Deployment api for web's pod bound to it: refused, and api's address stays
    # retained for api. So is a fixed address as api's ReplicaSet (a Deployment's pods are the
    # Deployment's), though that names no address anyone holds.
    web_uid = await running("web-6b7d9-bbbbb", "web", "node-b")
    for kind, name in (("Deployment", "api"), ("ReplicaSet", "api-6b7d9")):
        request = pod_of("node-b", "cb-1", "web-6b7d9-bbbbb", web_uid, kind=kind, name=name)
        request.release_policy = ipam_pb2.RELEASE_POLICY_IMMUTABLE  # the ReplicaSet has no binding
        err = await expect_error(b.Allocate(request), DENIED)
        info = detail_of(err, error_details_pb2.ErrorInfo)
        assert info.reason == "NOT_THE_PODS_WORKLOAD", err.details()
        assert dict(info.metadata) == {
            "caller": "node identity 'system:node:node-b'",
            "node": "node-b",
            "pod": f"{NS}/web-6b7d9-bbbbb",
            "workload": f"{kind} {NS}/{name}",
            "pod_workload": f"Deployment {NS}/web",
        }
        assert (
            f"the Kubernetes API says pod {NS}/web-6b7d9-bbbbb belongs to Deployment {NS}/web; a node takes a "
            "workload's fixed addresses only for that workload's own pods"
        ) in (err.details() or "")
    kept = await operator.GetAllocation(ipam_pb2.GetAllocationRequest(address=f"fixed/{first.ip}"))
    assert (kept.state, kept.container_id, kept.owner.workload_name) == (
        ipam_pb2.ALLOCATION_STATE_RETAINED, "", "api",
    )  # fmt: skip
    assert await node_of(operator, "node-b") == []

    # Web's pod with its own workload, named or resolved: a new address of web's.
    named = pod_of("node-b", "cb-1", "web-6b7d9-bbbbb", web_uid, kind="Deployment", name="web")
    own = (await b.Allocate(named)).allocation
    assert own.ip != first.ip and own.owner.workload_name == "web"
    assert (await b.Allocate(pod_of("node-b", "cb-1", "web-6b7d9-bbbbb", web_uid))).allocation.ip == own.ip

    # Api's next pod, bound to node B, takes api's retained address over.
    next_uid = await running("api-6b7d9-ccccc", "api", "node-b")
    taken = await b.Allocate(pod_of("node-b", "cb-2", "api-6b7d9-ccccc", next_uid))
    assert taken.reused and (taken.allocation.ip, taken.allocation.node) == (first.ip, "node-b")


async def test_without_kubernetes_a_node_takes_over_no_address_attached_elsewhere(tcp: dict[str, Stub]) -> None:
    operator, a, b = tcp["operator"], tcp["node-a"], tcp["node-b"]
    await fixed_pool(operator, "10.33.0.0/24")
    ip = (await a.Allocate(db0("node-a", "ca-1", "u1", workload=True))).allocation.ip

    await restricted(b.Allocate(db0("node-b", "cb-1", "u1", workload=True)), "node-b", "node-a")
    err = await expect_error(b.Allocate(db0("node-b", "cb-1", "u1", workload=True)), DENIED)
    assert "has no Kubernetes API to check that pod shop/db-0 is bound to node 'node-b': configure [kubernetes]" in (
        err.details() or ""
    )
    assert await node_of(operator, "node-a") == [("ca-1", ip)]
    assert await node_of(operator, "node-b") == []

    # An operator can move it.
    moved = await operator.Allocate(db0("node-b", "co-1", "u1", workload=True))
    assert (moved.allocation.ip, moved.allocation.node) == (ip, "node-b")


@pytest.fixture
def sockets(etcd_config: EtcdConfig, workdir: Path) -> Iterator[dict[str, IpamdProcess]]:
    """Two tke-ipamds over one storage: node-1's (node_name) and a hosted one serving every node."""
    daemons = {
        "node-1": IpamdProcess(
            workdir, "node-1", endpoints=list(etcd_config.endpoints), prefix=etcd_config.prefix,
            extra='node_name = "node-1"',
        ),
        "hosted": IpamdProcess(workdir, "hosted", endpoints=list(etcd_config.endpoints), prefix=etcd_config.prefix),
    }  # fmt: skip
    try:
        for daemon in daemons.values():
            daemon.start()
        yield daemons
    finally:
        for daemon in daemons.values():
            daemon.stop()


async def test_the_unix_socket_of_a_nodes_ipamd_serves_that_node_only(sockets: dict[str, IpamdProcess]) -> None:
    async with (
        grpc.aio.insecure_channel(sockets["node-1"].target) as one,
        grpc.aio.insecure_channel(sockets["hosted"].target) as every,
    ):
        local, hosted = ipam_pb2_grpc.IPAMServiceStub(one), ipam_pb2_grpc.IPAMServiceStub(every)
        # Operators keep using the node's socket for pools (the add-on has no other entry).
        await local.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net", cidr="10.31.0.0/24")))
        # Without node_name the socket serves every node, as before.
        await hosted.Allocate(allocate("node-2", "c2-1", "db-1"))
        await hosted.Allocate(allocate("node-2", "c2-2", "db-2"))
        before = await node_of(hosted, "node-2")

        await restricted(local.Allocate(allocate("node-2", "c1-x", "db-x")), "node-1", "node-2")
        await restricted(local.GarbageCollect(gc("node-2")), "node-1", "node-2")
        await restricted(local.Release(release("c2-1")), "node-1", "node-2")
        await restricted(local.GetAllocation(by_attachment("c2-1")), "node-1", "node-2")
        assert await node_of(hosted, "node-2") == before
        assert await node_of(local, "node-2") == before  # lists stay the operators'

        mine = (await local.Allocate(allocate("node-1", "c1-1", "db-3"))).allocation
        assert (await local.GetAllocation(by_attachment("c1-1"))).ip == mine.ip
        await local.Allocate(allocate("node-1", "c1-2", "db-4"))
        assert (await local.Release(release("c1-1"))).found
        assert [c.container_id for c in (await local.GarbageCollect(gc("node-1"))).collected] == ["c1-2"]

        assert (await hosted.Release(release("c2-1"))).found
        assert [c.container_id for c in (await hosted.GarbageCollect(gc("node-2"))).collected] == ["c2-2"]


def test_a_node_name_that_cannot_be_a_nodes_stops_ipamd_at_start(workdir: Path) -> None:
    sock = workdir / "private" / "ipamd.sock"
    unset = f'socket = "{sock}"\nnode_name_env = "TKE_TEST_NO_SUCH_VARIABLE"\n'
    assert "$TKE_TEST_NO_SUCH_VARIABLE is empty or not set" in refused_at_start(workdir, unset)
    assert "node_name 'a b' is not a node name" in refused_at_start(workdir, f'socket = "{sock}"\nnode_name = "a b"\n')
    both = f'socket = "{sock}"\nnode_name = "n1"\nnode_name_env = "NODE_NAME"\n'
    assert "not both" in refused_at_start(workdir, both)


async def test_a_node_allocates_any_address_only_for_pods_bound_to_it(
    tcp_kube: dict[str, Stub], admin: ClusterAPI
) -> None:
    """The drain: a node calling Allocate for pods that exist nowhere (or run elsewhere) would get
    every free address of a shared pool. With [kubernetes], every new address of a node's, of any
    release policy, is for a pod the API says is bound to it."""
    operator, a, b = tcp_kube["operator"], tcp_kube["node-a"], tcp_kube["node-b"]
    await operator.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net", cidr="10.35.0.0/24")))
    uid = (await create(admin, objects.pod("web-1", NS, node="node-a")))["metadata"]["uid"]
    await create(admin, objects.pod("web-2", NS))  # not scheduled yet

    bound = "a node takes addresses only for pods bound to it"
    for caller, request, says in (
        (b, pod_of("node-b", "cb-1", "ghost-1", ""), f"the Kubernetes API has no pod {NS}/ghost-1; {bound}"),
        (
            b,
            pod_of("node-b", "cb-1", "web-1", uid),
            f"the Kubernetes API says pod {NS}/web-1 is bound to node 'node-a'",
        ),
        (b, pod_of("node-b", "cb-1", "web-2", ""), f"pod {NS}/web-2 is not bound to a node yet; {bound}"),
        (a, pod_of("node-a", "ca-1", "web-1", "0ther-uid"), f"the request's pod uid 0ther-uid is not pod {NS}/web-1's"),
    ):
        err = await expect_error(caller.Allocate(request), DENIED)
        assert detail_of(err, error_details_pb2.ErrorInfo).reason == "NODE_RESTRICTED", err.details()
        assert f"Allocate of an address for pod {NS}/" in (err.details() or "") and says in (err.details() or "")
    assert await node_of(operator, "node-a") == [] and await node_of(operator, "node-b") == []
    assert (await operator.GetPool(ipam_pb2.GetPoolRequest(name="net"))).status.allocated == 0

    # Its own bound pod: an address, and the same one again on a repeated Allocate.
    mine = await a.Allocate(pod_of("node-a", "ca-1", "web-1", uid))
    again = await a.Allocate(pod_of("node-a", "ca-1", "web-1", uid))
    assert again.reused and again.allocation.ip == mine.allocation.ip
    assert await node_of(operator, "node-a") == [("ca-1", mine.allocation.ip)]
    # An operator (no node) is not checked.
    await operator.Allocate(pod_of("node-b", "co-1", "ghost-2", ""))


def limit_refused(err: grpc.aio.AioRpcError, node: str, held: int) -> None:
    info = detail_of(err, error_details_pb2.ErrorInfo)
    assert info.reason == "NODE_ALLOCATION_LIMIT", err.details()
    assert (info.metadata["node"], info.metadata["held"], info.metadata["limit"]) == (node, str(held), str(held))
    assert f"node {node!r} holds {held} addresses, its limit (max_allocations_per_node = {held})" in (
        err.details() or ""
    )


async def test_a_node_holds_at_most_max_allocations_per_node(etcd_config: EtcdConfig, workdir: Path) -> None:
    """Whatever the API says (here there is none to ask), a node identity holds at most
    max_allocations_per_node addresses; other nodes keep allocating meanwhile."""
    async with tcp_ipamd(etcd_config, workdir, "max_allocations_per_node = 3\n") as stubs:
        operator, a, b = stubs["operator"], stubs["node-a"], stubs["node-b"]
        await operator.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net", cidr="10.36.0.0/24")))
        held = [(await a.Allocate(allocate("node-a", f"ca-{i}", f"pod-a{i}"))).allocation for i in range(3)]
        err = await expect_error(a.Allocate(allocate("node-a", "ca-3", "pod-a3")), grpc.StatusCode.RESOURCE_EXHAUSTED)
        limit_refused(err, "node-a", 3)
        assert await node_of(operator, "node-a") == sorted((h.container_id, h.ip) for h in held)
        # A repeated Allocate at the limit is no new address.
        assert (await a.Allocate(allocate("node-a", "ca-0", "pod-a0"))).reused
        # Node B is not held back by node A's limit.
        for i in range(3):
            await b.Allocate(allocate("node-b", f"cb-{i}", f"pod-b{i}"))
        # A release makes room.
        assert (await a.Release(release("ca-0"))).found
        assert (await a.Allocate(allocate("node-a", "ca-3", "pod-a3"))).allocation.node == "node-a"
        await expect_error(a.Allocate(allocate("node-a", "ca-4", "pod-a4")), grpc.StatusCode.RESOURCE_EXHAUSTED)
        # An operator (no node) is not limited.
        await operator.Allocate(allocate("node-a", "co-1", "pod-o1"))
        assert len(await node_of(operator, "node-a")) == 4


def fixed(node: str, container: str, pod: str, workload: str = "") -> Request:
    """tke-ipamc's Allocate of a fixed address, with no binding (the request's release policy);
    `workload`: the StatefulSet the runtime names (TKE_WORKLOAD_NAME), else the pod is bare."""
    request = allocate(node, container, pod)
    request.release_policy = ipam_pb2.RELEASE_POLICY_IMMUTABLE
    if workload:
        request.owner.workload_kind, request.owner.workload_name = "StatefulSet", workload
    return request


async def test_a_node_cannot_drain_a_pool_through_retained_addresses(etcd_config: EtcdConfig, workdir: Path) -> None:
    """Without [kubernetes] nothing says a pod exists, and a fixed address a node releases stays
    RETAINED for the pod's next incarnation: a node naming made-up pods with a fixed release
    policy, and releasing each, got a new address every round while it held none attached, and
    drained the pool. A retained address counts against the node that last held it, so the round
    after max_allocations_per_node is refused; another replica (or a restarted one) counts the
    same, from etcd."""
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    async with tcp_ipamd(etcd_config, workdir, "max_allocations_per_node = 3\n") as stubs:
        operator, a, b = stubs["operator"], stubs["node-a"], stubs["node-b"]
        await operator.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net", cidr="10.38.0.0/24")))
        for i in range(3):
            await a.Allocate(fixed("node-a", f"ca-{i}", f"ghost-{i}"))
            assert (await a.Release(release(f"ca-{i}"))).retained
        assert await node_of(operator, "node-a") == []  # nothing attached on node A
        for request in (fixed("node-a", "ca-3", "ghost-3"), allocate("node-a", "ca-3", "ghost-3")):
            limit_refused(await expect_error(a.Allocate(request), exhausted), "node-a", 3)
        assert (await operator.GetPool(ipam_pb2.GetPoolRequest(name="net"))).status.allocated == 3
        # Node B is not held back by node A's retained addresses.
        assert (await b.Allocate(fixed("node-b", "cb-0", "pod-b0"))).allocation.node == "node-b"
    again = workdir / "again"
    again.mkdir()
    async with tcp_ipamd(etcd_config, again, "max_allocations_per_node = 3\n") as stubs:
        err = await expect_error(stubs["node-a"].Allocate(fixed("node-a", "ca-3", "ghost-3")), exhausted)
        limit_refused(err, "node-a", 3)


async def test_a_statefulsets_retained_addresses_follow_its_pods(etcd_config: EtcdConfig, workdir: Path) -> None:
    """The count leaves a StatefulSet's pods working: a pod's retained address is taken back on its
    node at the limit (it is counted there already), taken on another node it moves its count there,
    and the addresses a scale-down releases (ReleaseWorkload) give the node its room back."""
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    async with tcp_ipamd(etcd_config, workdir, "max_allocations_per_node = 3\n") as stubs:
        operator, a, b = stubs["operator"], stubs["node-a"], stubs["node-b"]
        await operator.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net", cidr="10.39.0.0/24")))
        first = [(await a.Allocate(fixed("node-a", f"ca-{i}", f"db-{i}", "db"))).allocation for i in range(3)]
        for i in range(3):
            assert (await a.Release(release(f"ca-{i}"))).retained
        # db-0 starts again on node A, which is at its limit: its own address, no new one.
        back = await a.Allocate(fixed("node-a", "ca-0b", "db-0", "db"))
        assert back.reused and back.allocation.ip == first[0].ip
        # db-1 is rescheduled to node B: its address and its count go there.
        moved = await b.Allocate(fixed("node-b", "cb-1", "db-1", "db"))
        assert moved.reused and (moved.allocation.ip, moved.allocation.node) == (first[1].ip, "node-b")
        # Node A holds db-0 (attached) and db-2 (retained): room for one more.
        await a.Allocate(allocate("node-a", "ca-3", "web-3"))
        limit_refused(await expect_error(a.Allocate(allocate("node-a", "ca-4", "web-4")), exhausted), "node-a", 3)
        # Node B holds db-1: room for two more.
        for i in range(2):
            await b.Allocate(allocate("node-b", f"cb-{i + 2}", f"web-b{i}"))
        limit_refused(await expect_error(b.Allocate(allocate("node-b", "cb-4", "web-b2")), exhausted), "node-b", 3)
        # The StatefulSet is scaled down to 2: db-2's retained address goes, and node A has room.
        scaled = await operator.ReleaseWorkload(
            ipam_pb2.ReleaseWorkloadRequest(
                workload=ipam_pb2.WorkloadRef(namespace="shop", kind="StatefulSet", name="db"), replicas=2
            )
        )
        assert [r.ip for r in scaled.released] == [first[2].ip]
        assert (await a.Allocate(allocate("node-a", "ca-4", "web-4"))).allocation.node == "node-a"
        limit_refused(await expect_error(a.Allocate(allocate("node-a", "ca-5", "web-5")), exhausted), "node-a", 3)


async def test_the_unix_socket_limits_its_node_only(etcd_config: EtcdConfig, workdir: Path) -> None:
    """The socket of a node's tke-ipamd holds its callers to max_allocations_per_node; a socket
    without node_name (the CNI path of a hosted tke-ipamd, and the benchmark's) is not limited."""
    endpoints, prefix = list(etcd_config.endpoints), etcd_config.prefix
    limit = "max_allocations_per_node = 2"
    daemons = {
        "node-1": IpamdProcess(
            workdir, "node-1", endpoints=endpoints, prefix=prefix, extra=f'node_name = "node-1"\n{limit}'
        ),
        "hosted": IpamdProcess(workdir, "hosted", endpoints=endpoints, prefix=prefix, extra=limit),
    }
    try:
        for daemon in daemons.values():
            daemon.start()
        async with (
            grpc.aio.insecure_channel(daemons["node-1"].target) as one,
            grpc.aio.insecure_channel(daemons["hosted"].target) as every,
        ):
            local, hosted = ipam_pb2_grpc.IPAMServiceStub(one), ipam_pb2_grpc.IPAMServiceStub(every)
            await local.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net", cidr="10.37.0.0/24")))
            for i in range(2):
                await local.Allocate(allocate("node-1", f"c1-{i}", f"db-{i}"))
            err = await expect_error(
                local.Allocate(allocate("node-1", "c1-2", "db-2")), grpc.StatusCode.RESOURCE_EXHAUSTED
            )
            limit_refused(err, "node-1", 2)
            for i in range(4):
                await hosted.Allocate(allocate("node-1", f"c2-{i}", f"web-{i}"))
            assert len(await node_of(hosted, "node-1")) == 6
    finally:
        for daemon in daemons.values():
            daemon.stop()


def test_max_allocations_per_node_below_one_stops_ipamd_at_start(workdir: Path) -> None:
    sock = workdir / "private" / "ipamd.sock"
    said = refused_at_start(workdir, f'socket = "{sock}"\nmax_allocations_per_node = 0\n')
    assert "max_allocations_per_node 0 must be at least 1" in said
