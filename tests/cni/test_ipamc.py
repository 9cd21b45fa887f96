"""tke-ipamc and cni-switch against a real tke-ipamd (over real etcd) on a unix socket: fixed
IPs that follow their pod, bindings that choose the network, an exhausted pool, ipamd down.

kubelet names only the pod (K8S_POD_NAMESPACE, K8S_POD_NAME): tke-ipamd resolves its workload
from the pod's ownerReferences in the cluster's Kubernetes API (the stand-in, with the pods of
a StatefulSet `db` and of a Deployment `web` through its ReplicaSet), never from its name."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from lightkube.codecs import from_dict
from lightkube.resources.apps_v1 import ReplicaSet

from tests.support.cni import (
    DEBIAN_CNI,
    IpamdDaemon,
    Runtime,
    addresses,
    bridge_network,
    console_script,
    ipamc_network,
    link_names,
    netns_path,
    record_dir,
    running_ipamd,
    switch_config,
    unique,
    with_prev,
)
from tests.support.kube import objects
from tests.support.kube.running import StandIn, running
from tke.internal.provider.kube.access import from_kubeconfig
from tke.internal.provider.kube.api import ClusterAPI
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc

STATEFUL = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=db-0;K8S_POD_INFRA_CONTAINER_ID=x"


async def seed(standin: StandIn) -> None:
    """The cluster's pods, as its controllers made them."""
    admin = from_kubeconfig(standin.kubeconfig(user="admin", groups=("system:masters",)))
    async with ClusterAPI(admin) as api:
        client: Any = api.client

        async def create(manifest: dict[str, Any]) -> dict[str, Any]:
            created: dict[str, Any] = (await client.create(from_dict(manifest))).to_dict()
            return created

        await create(objects.namespace("shop"))
        db = await create(objects.stateful_set("db", "shop", 2))
        await create(objects.pod("db-0", "shop", owner=db))
        web = await create(objects.deployment("web", "shop", 1))
        rs = await create(objects.replica_set("web-7d9f8b6c5", "shop", 1, owner=web))
        await create(objects.pod("web-7d9f8b6c5-x2x9z", "shop", owner=rs))
        await create(objects.pod("db-9", "shop"))  # a bare pod, whatever its name suggests


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[StandIn]:
    with running(tmp_path / "kube") as standin:
        asyncio.run(seed(standin))
        yield standin


@pytest.fixture
def ipamd(etcd_config: EtcdConfig, kube: StandIn, tmp_path: Path) -> Iterator[IpamdDaemon]:
    """tke-ipamd over the session's etcd, resolving pods through the cluster's API."""
    kubeconfig = tmp_path / "ipamd-kubeconfig"
    kubeconfig.write_text(
        kube.kubeconfig(user="system:serviceaccount:kube-system:tke-ipamd", groups=("system:masters",))
    )
    extra = f'[kubernetes]\nkubeconfig = "{kubeconfig}"\n'
    with running_ipamd(list(etcd_config.endpoints), etcd_config.prefix, extra) as daemon:
        yield daemon


@pytest.fixture
def admin(ipamd: IpamdDaemon) -> Iterator[Any]:
    with grpc.insecure_channel(f"unix:{ipamd.socket}") as channel:
        stub = ipam_pb2_grpc.IPAMServiceStub(channel)
        stub.CreatePool(
            ipam_pb2.CreatePoolRequest(
                pool=ipam_pb2.Pool(
                    name="fixed",
                    cidr="10.80.0.0/24",
                    ranges=[ipam_pb2.IPRange(start="10.80.0.10", end="10.80.0.50")],
                    dns=ipam_pb2.DNS(nameservers=["10.80.0.2"], search=["shop.svc"]),
                )
            ),
            timeout=10,
        )
        stub.CreatePool(
            ipam_pb2.CreatePoolRequest(
                pool=ipam_pb2.Pool(
                    name="tiny", cidr="10.81.0.0/24", ranges=[ipam_pb2.IPRange(start="10.81.0.5", end="10.81.0.5")]
                )
            ),
            timeout=10,
        )
        stub.PutBinding(
            ipam_pb2.PutBindingRequest(
                binding=ipam_pb2.Binding(
                    workload=ipam_pb2.WorkloadRef(namespace="shop", kind="StatefulSet", name="db"),
                    network="fixed",
                    pool="fixed",
                    release_policy=ipam_pb2.RELEASE_POLICY_IMMUTABLE,
                )
            ),
            timeout=10,
        )
        yield stub


@pytest.fixture
def conf(ipamd: IpamdDaemon, tmp_path: Path) -> dict[str, Any]:
    return switch_config(
        tmp_path,
        {
            "bridge": bridge_network(tmp_path, "10.70.0.0/24", name="pods"),
            "fixed": ipamc_network("fixed-ip", unique("tf"), ipamd.socket, tmp_path),
            "tiny": ipamc_network("tiny-ip", unique("tt"), ipamd.socket, tmp_path, pool="tiny"),
        },
        "bridge",
        ipamd={"address": ipamd.socket, "timeout": 10},
    )


@pytest.fixture
def ipamc(node: str, cni_bin: str) -> Runtime:
    return Runtime(binary=console_script("tke-ipamc"), node=node, path=[cni_bin, DEBIAN_CNI])


def allocation(admin: Any, cid: str) -> Any:
    try:
        return admin.GetAllocation(
            ipam_pb2.GetAllocationRequest(attachment=ipam_pb2.Attachment(container_id=cid, ifname="eth0")), timeout=10
        )
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND
        return None


def test_fixed_ip_follows_the_pod(
    switch: Runtime, namespaces: Callable[[], str], conf: dict[str, Any], admin: Any
) -> None:
    first_ns, first = namespaces(), unique("c")
    result = switch.run("ADD", conf, container_id=first, netns=netns_path(first_ns), args=STATEFUL + ";K8S_POD_UID=u1")
    address = result.ok()["ips"][0]["address"]
    assert address.startswith("10.80.0.") and addresses(first_ns, "eth0") == [address]
    assert "binding StatefulSet/db" in result.stderr
    held = allocation(admin, first)
    assert (held.owner.workload_kind, held.owner.workload_name, held.pool) == ("StatefulSet", "db", "fixed")

    check = switch.run("CHECK", with_prev(conf, result.json), container_id=first, netns=netns_path(first_ns))
    assert check.code == 0, check.stderr
    assert switch.run("DEL", conf, container_id=first, netns=netns_path(first_ns), args=STATEFUL).code == 0
    assert allocation(admin, first) is None

    # The pod restarts (or moves): a new sandbox, a new container id, a new pod uid.
    second_ns, second = namespaces(), unique("c")
    again = switch.run("ADD", conf, container_id=second, netns=netns_path(second_ns), args=STATEFUL + ";K8S_POD_UID=u2")
    assert again.ok()["ips"][0]["address"] == address
    assert addresses(second_ns, "eth0") == [address]


def test_pod_without_binding_gets_the_default_network(
    switch: Runtime, namespaces: Callable[[], str], conf: dict[str, Any], admin: Any
) -> None:
    # A Deployment's pod (through its ReplicaSet): Deployment web has no binding.
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-7d9f8b6c5-x2x9z"
    out = switch.run("ADD", conf, container_id=unique("c"), netns=netns_path(namespaces()), args=args)
    assert out.ok()["ips"][0]["address"].startswith("10.70.0.")
    assert admin.ResolveWorkload(
        ipam_pb2.ResolveWorkloadRequest(namespace="shop", pod_name="web-7d9f8b6c5-x2x9z"), timeout=10
    ) == ipam_pb2.WorkloadRef(namespace="shop", kind="Deployment", name="web")
    # Named like a pod of StatefulSet db, but no controller owns it: no binding applies.
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=db-9"
    out = switch.run("ADD", conf, container_id=unique("c"), netns=netns_path(namespaces()), args=args)
    assert out.ok()["ips"][0]["address"].startswith("10.70.0.")


def test_exhausted_pool(switch: Runtime, namespaces: Callable[[], str], conf: dict[str, Any], admin: Any) -> None:
    pod = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME={};TKE_NETWORK=tiny"
    ok = switch.run("ADD", conf, container_id=unique("c"), netns=netns_path(namespaces()), args=pod.format("a"))
    assert ok.ok()["ips"][0]["address"] == "10.81.0.5/24"
    ns, cid = namespaces(), unique("c")
    out = switch.run("ADD", conf, container_id=cid, netns=netns_path(ns), args=pod.format("b"))
    assert out.code == 1 and out.json["code"] == 102, out.stdout
    assert (
        "eth0" not in link_names(ns) and not (record_dir(Path(conf["stateDir"]).parent) / f"{cid}=eth0.json").exists()
    )


def test_ipamd_down(  # noqa: PLR0917 - pytest fixtures
    switch: Runtime, namespaces: Callable[[], str], conf: dict[str, Any], admin: Any, ipamd: IpamdDaemon, tmp_path: Path
) -> None:
    ns, cid = namespaces(), unique("c")
    switch.run("ADD", conf, container_id=cid, netns=netns_path(ns), args=STATEFUL).ok()
    ipamd.stop()

    # A pod that may have a binding: the ADD must wait for ipamd, never use the default network.
    out = switch.run("ADD", conf, container_id=unique("c"), netns=netns_path(namespaces()), args=STATEFUL)
    assert out.code == 1 and out.json["code"] == 11
    # An explicit fixed-IP network: tke-ipamc's code 11 passes through bridge and cni-switch.
    explicit = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=x;TKE_NETWORK=fixed"
    other = namespaces()
    out = switch.run("ADD", conf, container_id=unique("c"), netns=netns_path(other), args=explicit)
    assert out.code == 1 and out.json["code"] == 11, out.stdout
    assert "eth0" not in link_names(other)

    # DEL succeeds once the release is queued, and says so.
    out = switch.run("DEL", conf, container_id=cid, netns=netns_path(ns), args=STATEFUL)
    assert out.code == 0, out.stdout
    assert "queued" in out.stderr
    assert list((tmp_path / "ipamc" / "releases").glob("*.json"))

    ipamd.start()
    assert allocation(admin, cid) is not None  # still held: the release is only queued
    # The next call that reaches ipamd (here a GC) replays the queue.
    gc = {**conf, "cni.dev/valid-attachments": []}
    assert switch.run("GC", gc, drop=("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")).code == 0
    assert allocation(admin, cid) is None
    assert not list((tmp_path / "ipamc" / "releases").glob("*.json"))


def test_ipamc_as_a_runtime_calls_it(ipamc: Runtime, admin: Any, ipamd: IpamdDaemon, tmp_path: Path) -> None:
    net = ipamc_network("fixed-ip", unique("tf"), ipamd.socket, tmp_path, pool="fixed", gcMinAgeSeconds=0)
    net = net["plugins"][0]
    conf = {"cniVersion": "1.1.0", "name": "fixed-ip", **net}
    assert ipamc.run("VERSION", {"cniVersion": "1.1.0"}).ok()["supportedVersions"] == ["1.0.0", "1.1.0"]
    cid = unique("c")
    args = "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=lonely;K8S_POD_UID=u9;SOMETHING_ELSE=1"
    result = ipamc.run("ADD", conf, container_id=cid, netns="/proc/self/ns/net", args=args).ok()
    assert set(result) == {"cniVersion", "ips", "routes", "dns"}  # no interfaces from IPAM
    assert result["ips"][0]["address"].startswith("10.80.0.") and result["dns"]["nameservers"] == ["10.80.0.2"]
    assert result["routes"] and result["ips"][0]["gateway"] == "10.80.0.1"
    assert ipamc.run("CHECK", with_prev(conf, result), container_id=cid, netns="/proc/self/ns/net").code == 0
    status = ipamc.run("STATUS", conf)
    assert status.code == 0 and status.stdout == ""
    assert ipamc.run("DEL", conf, container_id=cid, args=args).code == 0
    assert ipamc.run("DEL", conf, container_id=cid, args=args).code == 0
    missing = ipamc.run("CHECK", with_prev(conf, result), container_id=cid, netns="/proc/self/ns/net")
    assert missing.json["code"] == 3

    # GC releases what the runtime no longer lists.
    stale = unique("c")
    ipamc.run("ADD", conf, container_id=stale, netns="/proc/self/ns/net", args="K8S_POD_NAME=p2").ok()
    assert ipamc.run("GC", {**conf, "cni.dev/valid-attachments": []}).code == 0
    assert allocation(admin, stale) is None

    ipamd.stop()
    assert ipamc.run("STATUS", conf).json["code"] == 50
    out = ipamc.run("ADD", conf, container_id=unique("c"), netns="/proc/self/ns/net", args=args)
    assert out.json["code"] == 11
    bad = {**conf, "ipam": {**conf["ipam"], "colour": "blue"}}
    assert ipamc.run("ADD", bad, container_id=unique("c"), netns="/proc/self/ns/net").json["code"] == 7
    assert ipamc.run("ADD", {**conf, "ipam": None}, container_id="c", netns="/proc/self/ns/net").json["code"] == 7


def test_pod_identities_no_kubernetes_object_can_have_never_fail_a_verb(  # noqa: PLR0917 - pytest fixtures
    switch: Runtime,
    ipamc: Runtime,
    namespaces: Callable[[], str],
    conf: dict[str, Any],
    admin: Any,
    ipamd: IpamdDaemon,
    tmp_path: Path,
) -> None:
    """podman sends its container or pod name as K8S_POD_NAME ('My_Pod' is a valid podman
    name, no Kubernetes name); a careless runtime may send anything. ipamd refuses such names,
    so the plugins must not ask it about them: the pod is no Kubernetes pod (no binding; a bare
    pod per container), and a bad uid is ignored, so a DEL always completes."""
    podman = "IgnoreUnknown=1;K8S_POD_NAMESPACE=My_Pod;K8S_POD_NAME=My_Pod;K8S_POD_INFRA_CONTAINER_ID=x"
    ns, cid = namespaces(), unique("c")
    out = switch.run("ADD", conf, container_id=cid, netns=netns_path(ns), args=podman)
    assert out.ok()["ips"][0]["address"].startswith("10.70.0."), out.stderr  # the default network
    assert "is no Kubernetes pod" in out.stderr
    assert switch.run("DEL", conf, container_id=cid, netns=netns_path(ns), args=podman).code == 0

    net = ipamc_network("fixed-ip", unique("tf"), ipamd.socket, tmp_path, pool="fixed")["plugins"][0]
    ipam_conf = {"cniVersion": "1.0.0", "name": "fixed-ip", **net}
    hostile = ("K8S_POD_NAMESPACE=../etc;K8S_POD_NAME=a/b", "K8S_POD_NAME=db-0;TKE_WORKLOAD_KIND=Stateful/Set")
    for args in (podman, *hostile):
        cid = unique("c")
        result = ipamc.run("ADD", ipam_conf, container_id=cid, netns="/proc/self/ns/net", args=args).ok()
        held = allocation(admin, cid)
        assert held is not None and result["ips"][0]["address"] == held.address
        assert (held.owner.namespace, held.owner.workload_kind) == ("default", "Pod")
        assert ipamc.run("DEL", ipam_conf, container_id=cid, args=args).code == 0
        assert allocation(admin, cid) is None

    # A container id that is no DNS-1123 name (capitals, '_': the CNI specification allows them)
    # is a bare pod of a name derived from the id.
    cid = "Container_" + unique("X")
    assert ipamc.run("ADD", ipam_conf, container_id=cid, netns="/proc/self/ns/net").code == 0
    assert allocation(admin, cid).owner.pod_name.startswith("container-")
    assert ipamc.run("DEL", ipam_conf, container_id=cid).code == 0

    # An ADD refused for its uid would be followed by a DEL with the same uid: it completes.
    bad_uid = "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=lonely;K8S_POD_UID=not/a uid"
    cid = unique("c")
    assert ipamc.run("ADD", ipam_conf, container_id=cid, netns="/proc/self/ns/net", args=bad_uid).code == 0
    out = ipamc.run("DEL", ipam_conf, container_id=cid, args=bad_uid)
    assert out.code == 0, out.stdout
    assert allocation(admin, cid) is None
    assert ipamc.run("DEL", ipam_conf, container_id=unique("never"), args=bad_uid).code == 0


def test_a_nodes_ipamd_serves_its_node_and_refuses_another_clearly(
    ipamc: Runtime, etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    """tke-ipamd with node_name (as the add-on's DaemonSet runs it): tke-ipamc configured for that
    node allocates, checks, collects and releases; one naming another node gets code 103 with
    ipamd's reason (its ErrorInfo's) and message in msg, and changes nothing."""
    workdir = Path(tempfile.mkdtemp(prefix="cni-node-", dir="/tmp"))
    daemon = IpamdDaemon(
        workdir, endpoints=list(etcd_config.endpoints), prefix=etcd_config.prefix, extra='node_name = "node-1"'
    )
    try:
        daemon.start()
        with grpc.insecure_channel(daemon.target) as channel:
            stub = ipam_pb2_grpc.IPAMServiceStub(channel)
            stub.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net", cidr="10.82.0.0/24")), timeout=10)
            net = ipamc_network("node-ip", unique("tn"), daemon.socket, tmp_path, gcMinAgeSeconds=0)["plugins"][0]
            mine = {"cniVersion": "1.1.0", "name": "node-ip", **net}  # "node": "node-1"
            other = {**mine, "ipam": {**mine["ipam"], "node": "node-2"}}
            cid, args = unique("c"), "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=api-0;K8S_POD_UID=u1"
            result = ipamc.run("ADD", mine, container_id=cid, netns="/proc/self/ns/net", args=args).ok()
            assert ipamc.run("CHECK", with_prev(mine, result), container_id=cid, netns="/proc/self/ns/net").code == 0

            for verb, config in (("ADD", other), ("GC", {**other, "cni.dev/valid-attachments": []})):
                out = ipamc.run(verb, config, container_id=unique("c"), netns="/proc/self/ns/net", args=args)
                assert out.json["code"] == 103, out.stdout
                assert "denied it (NODE_RESTRICTED): " in out.json["msg"], out.stdout
                assert "acts on node 'node-1' only" in out.json["msg"], out.stdout
                assert "'node-2'" in out.json["msg"], out.stdout
            listed = stub.ListAllocations(ipam_pb2.ListAllocationsRequest(), timeout=10).allocations
            assert [(a.container_id, a.node) for a in listed] == [(cid, "node-1")]

            assert ipamc.run("GC", {**mine, "cni.dev/valid-attachments": []}).code == 0
            assert allocation(stub, cid) is None
            assert ipamc.run("DEL", mine, container_id=cid, args=args).code == 0
    finally:
        daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_node_at_its_allocation_limit_is_refused_clearly(ipamc: Runtime, etcd_config: EtcdConfig) -> None:
    """A node's tke-ipamd with max_allocations_per_node = 1: the node's second ADD gets code 103
    with ipamd's reason (NODE_ALLOCATION_LIMIT) and message, not "no free address" (102): the
    pool has free addresses, the node has its share."""
    workdir = Path(tempfile.mkdtemp(prefix="cni-limit-", dir="/tmp"))
    daemon = IpamdDaemon(
        workdir,
        endpoints=list(etcd_config.endpoints),
        prefix=etcd_config.prefix,
        extra='node_name = "node-1"\nmax_allocations_per_node = 1',
    )
    try:
        daemon.start()
        with grpc.insecure_channel(daemon.target) as channel:
            stub = ipam_pb2_grpc.IPAMServiceStub(channel)
            stub.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net", cidr="10.84.0.0/24")), timeout=10)
            net = ipamc_network("node-ip", unique("tn"), daemon.socket, workdir)["plugins"][0]
            conf = {"cniVersion": "1.1.0", "name": "node-ip", **net}  # "node": "node-1"
            first = "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_UID=u1"
            cid = unique("c")
            ipamc.run("ADD", conf, container_id=cid, netns="/proc/self/ns/net", args=first).ok()
            second = "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-2;K8S_POD_UID=u2"
            out = ipamc.run("ADD", conf, container_id=unique("c"), netns="/proc/self/ns/net", args=second)
            assert out.json["code"] == 103, out.stdout
            assert "tke-ipamd refused it (NODE_ALLOCATION_LIMIT): node 'node-1' holds 1 addresses" in out.json["msg"]
            assert "max_allocations_per_node = 1" in out.json["msg"], out.stdout
            listed = stub.ListAllocations(ipam_pb2.ListAllocationsRequest(), timeout=10).allocations
            assert [a.container_id for a in listed] == [cid]
            assert ipamc.run("DEL", conf, container_id=cid, args=first).code == 0
    finally:
        daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_node_naming_another_workload_for_its_pod_is_refused_clearly(
    ipamc: Runtime, etcd_config: EtcdConfig, kube: StandIn, tmp_path: Path
) -> None:
    """A node's tke-ipamd with [kubernetes] (as the add-on runs it): a runtime naming Deployment
    web (TKE_WORKLOAD_KIND/NAME) for a bare pod bound to the node would take web's retained
    address; tke-ipamc gets code 103 with ipamd's reason and the workload the API says in msg."""

    async def bound_pods() -> None:
        admin = from_kubeconfig(kube.kubeconfig(user="admin", groups=("system:masters",)))
        async with ClusterAPI(admin) as api:
            client: Any = api.client
            rs = (await client.get(ReplicaSet, "web-7d9f8b6c5", namespace="shop")).to_dict()
            for manifest in (objects.pod("web-7d9f8b6c5-n1n1n", "shop", node="node-1", owner=rs),
                             objects.pod("tool", "shop", node="node-1")):  # fmt: skip
                await client.create(from_dict(manifest))

    asyncio.run(bound_pods())
    workdir = Path(tempfile.mkdtemp(prefix="cni-owner-", dir="/tmp"))
    (workdir / "kubeconfig").write_text(kube.kubeconfig(user="system:serviceaccount:kube-system:tke-ipamd",
                                                        groups=("system:masters",)))  # fmt: skip
    daemon = IpamdDaemon(
        workdir,
        endpoints=list(etcd_config.endpoints),
        prefix=etcd_config.prefix,
        extra=f'node_name = "node-1"\n[kubernetes]\nkubeconfig = "{workdir / "kubeconfig"}"\n',
    )
    try:
        daemon.start()
        with grpc.insecure_channel(daemon.target) as channel:
            stub = ipam_pb2_grpc.IPAMServiceStub(channel)
            stub.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="net", cidr="10.83.0.0/24")), timeout=10)
            web = ipam_pb2.WorkloadRef(namespace="shop", kind="Deployment", name="web")
            stub.PutBinding(ipam_pb2.PutBindingRequest(binding=ipam_pb2.Binding(
                workload=web, pool="net", release_policy=ipam_pb2.RELEASE_POLICY_IMMUTABLE)), timeout=10)  # fmt: skip
            net = ipamc_network("node-ip", unique("tn"), daemon.socket, tmp_path)["plugins"][0]
            conf = {"cniVersion": "1.1.0", "name": "node-ip", **net}  # "node": "node-1"
            cid, own = unique("c"), "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-7d9f8b6c5-n1n1n"
            address = ipamc.run("ADD", conf, container_id=cid, netns="/proc/self/ns/net", args=own).ok()["ips"][0]
            assert ipamc.run("DEL", conf, container_id=cid, args=own).code == 0  # web's address: retained

            named = "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=tool;TKE_WORKLOAD_KIND=Deployment;TKE_WORKLOAD_NAME=web"
            out = ipamc.run("ADD", conf, container_id=unique("c"), netns="/proc/self/ns/net", args=named)
            assert out.json["code"] == 103, out.stdout
            assert "tke-ipamd denied it (NOT_THE_PODS_WORKLOAD): " in out.json["msg"], out.stdout
            assert "the Kubernetes API says pod shop/tool belongs to Pod shop/tool" in out.json["msg"], out.stdout
            held = stub.GetAllocation(ipam_pb2.GetAllocationRequest(address=f"net/{address['address'].split('/')[0]}"),
                                      timeout=10)  # fmt: skip
            assert (held.state, held.container_id) == (ipam_pb2.ALLOCATION_STATE_RETAINED, "")
    finally:
        daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)
