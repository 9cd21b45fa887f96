"""tke-ipamd's kube-scheduler extender, as kube-scheduler calls it: a real tke-ipamd process
(IP storage on the session's etcd, the cluster's API on the stand-in, the extender on loopback)
answering the filter and prioritize verbs of k8s.io/kube-scheduler/extender/v1.

data/extender-filter-request.json has the shape kube-scheduler 1.30 sends for an extender that
is not node-cache capable: the Go field names of ExtenderArgs ("Pod", "Nodes", "NodeNames":
null), the Pod and the NodeList in full as the API serves them (managedFields, projected token
volume, default tolerations, the Nodes' capacity and daemon endpoints)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2

from tests.support.ipamd_daemon import IpamdProcess
from tests.support.kube import objects
from tests.support.kube.running import StandIn
from tests.support.ports import free_port
from tke.internal.provider.kube.api import ClusterAPI
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc

from .kubernetes import NS, create, granted, ipamd_kubeconfig, kube_server

RECORDED = json.loads((Path(__file__).parent / "data" / "extender-filter-request.json").read_text())
IMMUTABLE = ipam_pb2.RELEASE_POLICY_IMMUTABLE


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[StandIn]:
    with kube_server(tmp_path) as standin:
        yield standin


@pytest.fixture
async def admin(kube: StandIn) -> AsyncIterator[ClusterAPI]:
    async with await granted(kube) as api:
        for node in RECORDED["Nodes"]["items"]:  # the Nodes of the recorded request, as registered
            ip = node["status"]["addresses"][0]["address"]
            await create(api, objects.node(node["metadata"]["name"], ip=ip))
        yield api


@pytest.fixture
def extender(etcd_config: EtcdConfig, kube: StandIn, admin: ClusterAPI) -> Iterator[tuple[IpamdProcess, str]]:
    workdir = Path(tempfile.mkdtemp(prefix="ipamd-ext-", dir="/tmp"))
    (workdir / "kubeconfig").write_text(ipamd_kubeconfig(kube))
    port = free_port()
    daemon = IpamdProcess(
        workdir,
        endpoints=list(etcd_config.endpoints),
        prefix=etcd_config.prefix,
        extra=f'[kubernetes]\nkubeconfig = "{workdir / "kubeconfig"}"\n[extender]\naddress = "127.0.0.1:{port}"\n',
    )
    try:
        daemon.start()
        with grpc.insecure_channel(daemon.target) as channel:
            stub = ipam_pb2_grpc.IPAMServiceStub(channel)
            for name, cidr, subnet, names in (
                ("rack-a", "10.91.0.0/24", "192.168.1.0/24", ["edge-7"]),
                ("rack-b", "10.92.0.0/24", "192.168.2.0/24", []),
            ):
                pool = ipam_pb2.Pool(name=name, cidr=cidr, node_subnets=[subnet], node_names=names)
                stub.CreatePool(ipam_pb2.CreatePoolRequest(pool=pool), timeout=10)
            binding = ipam_pb2.Binding(
                workload=ipam_pb2.WorkloadRef(namespace=NS, kind="StatefulSet", name="db"),
                pool="rack-a",
                release_policy=IMMUTABLE,
            )
            stub.PutBinding(ipam_pb2.PutBindingRequest(binding=binding), timeout=10)
        yield daemon, f"http://127.0.0.1:{port}"
    finally:
        daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def call(url: str, verb: str, args: Any) -> Any:
    """What kube-scheduler's HTTPExtender does: POST the JSON, 200 or it is an error."""
    body = args if isinstance(args, bytes) else json.dumps(args).encode()
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{url}/{verb}", content=body, headers={"Content-Type": "application/json"})
    return response.status_code, response.json()


def names(result: dict[str, Any]) -> list[str]:
    if result["NodeNames"] is not None:
        return list(result["NodeNames"])
    return [n["metadata"]["name"] for n in result["Nodes"]["items"]]


async def test_the_extender_keeps_a_bound_pod_on_the_nodes_its_pool_serves(
    extender: tuple[IpamdProcess, str], admin: ClusterAPI
) -> None:
    daemon, url = extender
    code, result = await call(url, "filter", RECORDED)
    assert code == 200 and result["Error"] == ""
    # rack-a serves node-a1 by its InternalIP and edge-7 by name; the Nodes come back whole.
    assert names(result) == ["node-a1", "edge-7"]
    assert result["Nodes"]["items"][0] == RECORDED["Nodes"]["items"][0]
    assert result["FailedAndUnresolvableNodes"] == {
        "node-b1": "pool rack-a does not serve node node-b1 (InternalIP 192.168.2.10)"
    }
    assert result["NodeNames"] is None and result["FailedNodes"] == {}

    # The node-cache-capable form: names only; the extender reads the Nodes from the API.
    by_name = {"Pod": RECORDED["Pod"], "NodeNames": ["node-a1", "node-b1", "edge-7"]}
    code, result = await call(url, "filter", by_name)
    assert code == 200 and result["NodeNames"] == ["node-a1", "edge-7"] and result["Nodes"] is None

    # Prioritize: the nodes its pool serves, scored by the pool's free share (0 to 10).
    code, scores = await call(url, "prioritize", RECORDED)
    assert code == 200 and scores == [
        {"Host": "node-a1", "Score": 10},
        {"Host": "node-b1", "Score": 0},
        {"Host": "edge-7", "Score": 10},
    ]

    # db-1 already holds a fixed address from rack-b (say, pinned there by an operator): it must
    # land where that address works, whatever its binding's pool.
    with grpc.insecure_channel(daemon.target) as channel:
        stub = ipam_pb2_grpc.IPAMServiceStub(channel)
        owner = ipam_pb2.Owner(namespace=NS, pod_name="db-1", workload_kind="StatefulSet", workload_name="db")
        stub.Allocate(ipam_pb2.AllocateRequest(owner=owner, container_id="c1", ifname="eth0", node="node-b1",
                                               node_ip="192.168.2.10", pool="rack-b"), timeout=10)  # fmt: skip
        assert stub.Release(ipam_pb2.ReleaseRequest(container_id="c1", ifname="eth0"), timeout=10).retained
    code, result = await call(url, "filter", RECORDED)
    assert names(result) == ["node-b1"] and set(result["FailedAndUnresolvableNodes"]) == {"node-a1", "edge-7"}


def pod_of(namespace: str, name: str, refs: list[Any] | None = None, *, host_network: bool = False) -> Any:
    """The recorded ExtenderArgs for another pod (its namespace, name and ownerReferences)."""
    args = copy.deepcopy(RECORDED)
    args["Pod"]["metadata"].update(namespace=namespace, name=name, ownerReferences=refs or [])
    if host_network:
        args["Pod"]["spec"]["hostNetwork"] = True
    return args


async def test_pods_go_only_where_a_pool_takes_their_namespace(
    extender: tuple[IpamdProcess, str], admin: ClusterAPI
) -> None:
    """Allocate takes a new address only from a pool whose `namespaces` take the pod's namespace
    (by node for a pod without a binding or with a binding without a pool; the binding's pool
    otherwise): the extender keeps the pod off nodes where that leaves no pool."""
    daemon, url = extender
    with grpc.insecure_channel(daemon.target) as channel:
        stub = ipam_pb2_grpc.IPAMServiceStub(channel)
        # StatefulSet queue has no binding; its network's release policy made queue-0's address
        # on node-b1 fixed, before rack-b was given to other namespaces.
        owner = ipam_pb2.Owner(namespace=NS, pod_name="queue-0", workload_kind="StatefulSet", workload_name="queue")
        request = ipam_pb2.AllocateRequest(
            owner=owner,
            container_id="q1",
            ifname="eth0",
            node="node-b1",
            node_ip="192.168.2.10",
            release_policy=IMMUTABLE,
        )
        stub.Allocate(request, timeout=10)
        assert stub.Release(ipam_pb2.ReleaseRequest(container_id="q1", ifname="eth0"), timeout=10).retained
        only = ipam_pb2.Pool(name="rack-b", namespaces=["team-*"])
        mask = field_mask_pb2.FieldMask(paths=["namespaces"])
        stub.UpdatePool(ipam_pb2.UpdatePoolRequest(pool=only, update_mask=mask), timeout=10)
        for name, pool in (("api", "rack-b"), ("cache", "")):
            binding = ipam_pb2.Binding(
                workload=ipam_pb2.WorkloadRef(namespace=NS, kind="StatefulSet", name=name),
                pool=pool,
                release_policy=IMMUTABLE,
            )
            stub.PutBinding(ipam_pb2.PutBindingRequest(binding=binding), timeout=10)
    web = await create(admin, objects.deployment("web", NS, 1))
    rs = await create(admin, objects.replica_set("web-5d8f7c6b9", NS, 1, owner=web))
    unbound = pod_of(NS, "web-5d8f7c6b9-x2x9z", objects.pod("x", NS, owner=rs)["metadata"]["ownerReferences"])
    refused = "but does not hand out addresses to namespace shop (see the pool's namespaces)"

    # Without a binding (Allocate chooses the pool by node) and with a binding without a pool:
    # node-b1 is served only by rack-b, which does not take shop.
    for args in (unbound, pod_of(NS, "cache-0", [{"kind": "StatefulSet", "name": "cache", "controller": True}])):
        code, result = await call(url, "filter", args)
        assert code == 200 and result["Error"] == "", result
        assert names(result) == ["node-a1", "edge-7"]
        assert result["FailedAndUnresolvableNodes"] == {
            "node-b1": f"pool rack-b serves node node-b1 (InternalIP 192.168.2.10) {refused}"
        }
        code, scores = await call(url, "prioritize", args)
        assert [s["Score"] for s in scores] == [10, 0, 10]

    # A binding naming rack-b: no node at all (Allocate would refuse POOL_NOT_ALLOWED anywhere).
    code, result = await call(url, "filter", pod_of(NS, "api-0", [{"kind": "StatefulSet", "name": "api",
                                                                    "controller": True}]))  # fmt: skip
    assert code == 200 and names(result) == []
    assert result["FailedAndUnresolvableNodes"]["node-a1"] == (
        "pool rack-b does not hand out addresses to namespace shop (see the pool's namespaces)"
    )
    assert result["FailedAndUnresolvableNodes"]["node-b1"].endswith(refused)

    # An address the owner holds stays its: queue-0 goes where its address works.
    code, result = await call(url, "filter", pod_of(NS, "queue-0", [{"kind": "StatefulSet", "name": "queue",
                                                                      "controller": True}]))  # fmt: skip
    assert code == 200 and names(result) == ["node-b1"], result

    # A namespace rack-b takes goes anywhere; a pod on the host's network needs no address.
    for args in (pod_of("team-x", "tool"), pod_of(NS, "agent", host_network=True)):
        code, result = await call(url, "filter", args)
        assert code == 200 and names(result) == ["node-a1", "node-b1", "edge-7"], result
        assert result["FailedAndUnresolvableNodes"] == {}


async def test_what_is_not_extender_args_is_an_error_not_a_crash(
    extender: tuple[IpamdProcess, str], admin: ClusterAPI
) -> None:
    daemon, url = extender
    assert (await call(url, "filter", b"{not json"))[0] == 400
    code, result = await call(url, "filter", {"Pod": 5, "Nodes": RECORDED["Nodes"]})
    assert code == 200 and result["Error"] == "bad ExtenderArgs: Pod has no metadata"
    assert result["Nodes"] is None and result["NodeNames"] is None  # kube-scheduler reads the Error
    code, result = await call(url, "filter", {"Pod": RECORDED["Pod"]})
    assert result["Error"] == "bad ExtenderArgs: neither Nodes nor NodeNames is given"
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{url}/healthz")).text == "ok"
    assert "Traceback" not in daemon.log_path.read_text()


def test_the_extender_listens_on_loopback_only(tmp_path: Path, kube: StandIn) -> None:
    (tmp_path / "kubeconfig").write_text(ipamd_kubeconfig(kube))
    config = tmp_path / "ipamd.toml"
    config.write_text(
        f'socket = ""\n[kubernetes]\nkubeconfig = "{tmp_path / "kubeconfig"}"\n[extender]\naddress = "0.0.0.0:9040"\n'
    )
    done = subprocess.run(
        [str(Path(sys.executable).parent / "tke-ipamd"), "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "[extender] address 0.0.0.0:9040: the extender speaks plain HTTP without authentication" in done.stderr
    assert "Traceback" not in done.stderr
