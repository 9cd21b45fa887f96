"""The baremetal providers install clusters the kubeadm way, against real sshd machines on
loopback whose PATH holds stand-ins of kubeadm, kubelet, systemctl, apt-get, modprobe, sysctl,
... (tests/support/standins.py): they record every call and refuse what the real programs
would (documents that do not match kubeadm's reference field lists, a second init, a
control-plane join without the CAs, a bad token or CA pin, failed preflight checks). The
platform reaches the clusters' Kubernetes API with its real client, the controller's default,
and the API is the stand-in of tests/support/kube, up once kubeadm init ran, with the
cluster's own CA; the test plays the kubelets that register the Nodes, and a workload's
controller behind a PodDisruptionBudget (tests/support/world_api.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import field_mask_pb2
from lightkube.codecs import from_dict
from lightkube.resources.apps_v1 import ReplicaSet
from lightkube.resources.core_v1 import Namespace, Node, Pod
from lightkube.types import PatchType

from tests.support import kubeadm_reference
from tests.support.apiserver import Running
from tests.support.controller import controller_config, credentials_published, publish_credentials
from tests.support.kube import objects, rollouts
from tests.support.kubeadm_world import World, kubeadm_machines
from tests.support.ports import free_port
from tests.support.sshd import Machines, SSHServer
from tests.support.waiting import wait_for
from tests.support.world_api import Routed, WorldAPI, world_api
from tke.internal.controller.manager import Controller
from tke.internal.controller.progress import find
from tke.internal.plugin.loader import ProviderConfig
from tke.internal.provider.addons import network
from tke.internal.provider.clusterapi import KubeClusterAPI, KubeClusterAPIs
from tke.internal.provider.credentials import CredentialConfig
from tke.internal.provider.kube import pki
from tke.internal.provider.kube.api import ClusterAPI
from tke.internal.provider.ssh import SSHOptions
from tke.internal.storage.etcd import EtcdConfig
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2, credential_pb2, credential_pb2_grpc, machine_pb2

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

NODE_NAME = 'echo "node-$(echo "$SSH_CONNECTION" | cut -d" " -f3 | tr . -)"'


def node_name(server: SSHServer) -> str:
    return "node-" + server.host.replace(".", "-")


@pytest.fixture
def five(tmp_path: Path) -> Iterator[tuple[Machines, World]]:
    with kubeadm_machines(tmp_path, 5) as got:
        yield got


@contextlib.asynccontextmanager
async def controller(
    api: Running, etcd_config: EtcdConfig, m: Machines, world: World, endpoint: str
) -> AsyncIterator[WorldAPI]:
    """The controller, and the cluster's API reached at `endpoint` (host:port): the stand-in,
    up once kubeadm init ran (a drain gives up after 2 s, so that a budget's refusal shows)."""
    options: dict[str, Any] = {"root_dir": m.root_dir, "node_name_command": NODE_NAME, "drain_timeout": 2.0}
    config = controller_config(
        api.address,
        etcd_config,
        credentials={"default/test-key": CredentialConfig(private_key_file=str(m.key.private_key_file))},
        ssh=SSHOptions(known_hosts_file=str(m.known_hosts), connect_attempts=2, connect_timeout=5),
        cluster_providers={"baremetal": ProviderConfig(options=options)},
        machine_providers={"baremetal": ProviderConfig(options=options)},
    )
    config = replace(config, workers=4)
    host = endpoint.rpartition(":")[0]
    async with world_api(world, m.root.parent / "kube", port=free_port(), server_names=(host,)) as cluster_api:
        apis = Routed(KubeClusterAPIs(drain_poll=0.2), {f"https://{endpoint}": cluster_api.url})
        task = asyncio.create_task(Controller(config, cluster_apis=apis).run())
        try:
            await credentials_published(etcd_config, "default/test-key")
            yield cluster_api
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def cluster(name: str, version: str, masters: list[SSHServer]) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster()
    c.metadata.name = name
    c.spec.type = "baremetal"
    c.spec.version = version
    c.spec.network.pod_cidr = "10.244.0.0/16"
    c.spec.network.service_cidr = "10.96.0.0/12"
    for s in masters:
        c.spec.machines.add(ip=s.host, ssh_port=s.port, credential_ref="test-key")
    c.spec.extra_args["kube-apiserver"].args["audit-log-maxage"] = "30"
    return c


def worker(name: str, cluster_name: str, server: SSHServer) -> machine_pb2.Machine:
    m = machine_pb2.Machine()
    m.metadata.name = name
    m.spec.cluster_name = cluster_name
    m.spec.type = "baremetal"
    m.spec.ip = server.host
    m.spec.ssh_port = server.port
    m.spec.credential_ref = "test-key"
    m.spec.role = machine_pb2.MACHINE_ROLE_WORKER
    m.spec.labels["pool"] = "general"
    return m


async def phase_of(api: Running, name: str, phase: int) -> cluster_pb2.Cluster | None:
    c = await api.clusters.Get(cluster_pb2.GetClusterRequest(name=name))
    return c if c.status.phase == phase and c.status.observed_generation == c.metadata.generation else None


async def machine_running(api: Running, name: str) -> machine_pb2.Machine | None:
    m = await api.machines.Get(machine_pb2.GetMachineRequest(name=name))
    return m if m.status.phase == machine_pb2.MACHINE_PHASE_RUNNING else None


async def record_cordons(api: ClusterAPI, seen: list[tuple[str, bool]]) -> None:
    """(node, unschedulable) each time a Node is cordoned or uncordoned, in order."""
    nodes, version = await api.list_objects(Node)
    state = {n.metadata.name: bool(n.spec and n.spec.unschedulable) for n in nodes if n.metadata}
    while True:
        async for event in api.watch(Node, resource_version=version):
            version = event.resource_version or version
            node = event.object
            if event.type in ("ADDED", "MODIFIED") and node.metadata:
                now = bool(node.spec and node.spec.unschedulable)
                if state.get(node.metadata.name, False) != now:
                    seen.append((node.metadata.name, now))
                state[node.metadata.name] = now


async def run_web(api: ClusterAPI, nodes: list[str]) -> None:
    """A ReplicaSet's pods, one Ready on each node, behind a budget of one disruption at a time
    (as its controller, the scheduler and the kubelets would make them)."""
    c: Any = api.client
    await c.create(from_dict(objects.namespace("shop")))
    rs = (await c.create(from_dict(objects.replica_set("web", "shop", len(nodes))))).to_dict()
    await c.create(from_dict(objects.budget("web", "shop", "web", maxUnavailable=1)))
    for i, node in enumerate(nodes):
        await start_pod(api, f"web-{i}", node, rs)


async def start_pod(api: ClusterAPI, name: str, node: str, owner: dict[str, Any]) -> None:
    c: Any = api.client
    await c.create(from_dict(objects.pod(name, "shop", node=node, app="web", owner=owner)))
    await c.patch(Pod.Status, name, objects.RUNNING_READY, namespace="shop", patch_type=PatchType.MERGE)


def kubeadm_calls(world: World) -> list[tuple[str, str]]:
    """(machine, verb) of every kubeadm call that succeeded, in order."""
    out = []
    for c in world.calls("kubeadm"):
        if c["ok"]:
            verb = " ".join(a for a in c["argv"][1:3] if not a.startswith("-"))
            out.append((c["machine"], verb))
    return out


async def test_an_ha_cluster_is_installed_upgraded_and_scaled_in_the_kubeadm_way(
    api: Running, etcd_config: EtcdConfig, five: tuple[Machines, World]
) -> None:
    machines, world = five
    m0, m1, m2, w1, w2 = machines.servers
    spec = cluster("prod", "1.30.2", [m0, m1, m2])
    spec.spec.control_plane_vip.address = "192.0.2.100"
    spec.spec.control_plane_vip.interface = "eth0"
    await publish_credentials(etcd_config, "default/test-key")  # as the controller will, before it starts here
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=spec))
    for name, server in (("w1", w1), ("w2", w2)):
        await api.machines.Create(machine_pb2.CreateMachineRequest(machine=worker(name, "prod", server)))

    async with controller(api, etcd_config, machines, world, "192.0.2.100:8443") as cluster_api:
        c = await wait_for(lambda: phase_of(api, "prod", cluster_pb2.CLUSTER_PHASE_RUNNING), within=120)
        for name in ("w1", "w2"):
            await wait_for(lambda name=name: machine_running(api, name), within=120)  # type: ignore[misc]

        # -- exactly one init, on the first master, then the other masters join one by one --
        calls = kubeadm_calls(world)
        inits = [c for c in calls if c[1] == "init"]
        assert inits == [(m0.host, "init")]
        joins = [c[0] for c in calls if c[1] == "join"]
        assert joins[:2] == [m1.host, m2.host]
        assert sorted(joins[2:]) == sorted([w1.host, w2.host])
        assert calls.index((m0.host, "init")) < calls.index((m1.host, "join"))
        state = world.read()
        assert set(state["cluster"]["etcd"]) == {node_name(s) for s in (m0, m1, m2)}
        assert state["cluster"]["endpoint"] == "192.0.2.100:8443"
        # Workers joined with a token the platform created on a master (kubeadm token create)
        # and the pin of the cluster CA's public key; the stand-in checked both.
        assert sum(1 for c in calls if c[1] == "token create") == 4  # two masters, two workers
        assert c.status.control_plane_endpoint == "192.0.2.100:8443"
        assert [m.node_name for m in c.status.control_plane] == [node_name(s) for s in (m0, m1, m2)]
        # The managed VIP: keepalived and haproxy as static pods on every master, haproxy
        # spreading over the three API servers.
        for s in (m0, m1, m2):
            root = world.root_of(s.host)
            assert (root / "etc/kubernetes/manifests/keepalived.yaml").exists()
            haproxy = (root / "etc/haproxy/haproxy.cfg").read_text()
            assert all(f"{x.host}:6443" in haproxy for x in (m0, m1, m2)) and "bind *:8443" in haproxy
        assert "state MASTER" in (world.root_of(m0.host) / "etc/keepalived/keepalived.conf").read_text()
        # Nodes prepared by default: modules, sysctls, packages of the version, swap off.
        for s in (m0, w1):
            mine = state["machines"][s.host]
            assert {"overlay", "br_netfilter"} <= set(mine["modules"]) and mine["swap"] is False
            assert mine["sysctl"]["net.ipv4.ip_forward"] == "1"
            assert mine["packages"]["kubeadm"] == "1.30.2" and mine["repository"] == "1.30"
            assert "SystemdCgroup = true" in (world.root_of(s.host) / "etc/containerd/config.toml").read_text()
        # The CAs are the platform's: kept in the credential store, the same on every master.
        creds = credential_pb2_grpc.ClusterCredentialServiceStub(api.channel)
        stored = await creds.Get(credential_pb2.GetClusterCredentialRequest(name="prod"))
        for s in (m0, m1, m2):
            assert (world.root_of(s.host) / "etc/kubernetes/pki/ca.crt").read_text() == stored.spec.ca.cert_pem
        # Machine status from the worker's Node, as its kubelet registered it in the API.
        got = await api.machines.Get(machine_pb2.GetMachineRequest(name="w1"))
        assert got.status.node_info.kubelet_version == "v1.30.2"
        assert got.status.node_info.container_runtime_version == "containerd://1.7.24"
        assert got.status.node_info.os_image == "Debian GNU/Linux 12 (bookworm)"
        assert ("InternalIP", w1.host) in [(a.type, a.address) for a in got.status.addresses]
        node_ready = find(got.status.conditions, "NodeReady")
        assert node_ready is not None and node_ready.reason == "KubeletReady"

        async with cluster_api.admin() as admin:
            nodes = {n.metadata.name: n for n in await admin.nodes() if n.metadata}
            assert set(nodes) == {node_name(s) for s in machines.servers}
            cordons: list[tuple[str, bool]] = []
            watcher = asyncio.create_task(record_cordons(admin, cordons))
            workers = [node_name(w1), node_name(w2)]
            await run_web(admin, workers)

            # -- upgrade: masters first (apply on the first, node on the others), workers one
            # at a time, each drained through the Eviction API with the budget respected --
            change = cluster_pb2.Cluster()
            change.metadata.name, change.spec.version = "prod", "1.31.0"
            mask = field_mask_pb2.FieldMask(paths=["spec.version"])
            await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=change, update_mask=mask))

            async def held_back() -> machine_pb2.Machine | None:
                """The worker drained second: its web pod cannot go while the first one's
                has no replacement (two expected, one healthy, one disruption allowed)."""
                for name in ("w1", "w2"):
                    m = await api.machines.Get(machine_pb2.GetMachineRequest(name=name))
                    drain = find(m.status.conditions, "DrainForUpgrade")
                    if drain is not None and "disruption budget" in drain.last_error:
                        return m
                return None

            second = await wait_for(held_back, within=150)
            last = find(second.status.conditions, "DrainForUpgrade")
            assert last is not None and "timed out after 2s; pods that did not leave: shop/web-" in last.last_error
            assert "The disruption budget web needs 1 healthy pods and has 1 currently" in last.last_error
            first = node_name(w2) if second.metadata.name == "w1" else node_name(w1)
            # The ReplicaSet's controller and the scheduler: a replacement on the upgraded node.
            assert [p.metadata.name for p in await admin.pods_on(first) if p.metadata] == []
            client: Any = admin.client
            rs = (await client.get(ReplicaSet, "web", namespace="shop")).to_dict()
            await start_pod(admin, "web-new", first, rs)

            async def upgraded() -> bool:
                for name in ("w1", "w2"):
                    got = await api.machines.Get(machine_pb2.GetMachineRequest(name=name))
                    if got.status.node_info.kubelet_version != "v1.31.0" or got.status.phase != 2:
                        return False
                return True

            await wait_for(upgraded, within=150)
            upgrades = [c for c in kubeadm_calls(world) if c[1].startswith("upgrade")]
            assert upgrades[0] == (m0.host, "upgrade apply")
            assert upgrades[1:3] == [(m1.host, "upgrade node"), (m2.host, "upgrade node")]
            assert sorted(upgrades[3:]) == sorted([(w1.host, "upgrade node"), (w2.host, "upgrade node")])
            # Masters, then workers, each cordoned and uncordoned before the next one starts.
            second_node = node_name(w1) if second.metadata.name == "w1" else node_name(w2)
            assert cordons == [
                *((node_name(s), x) for s in (m0, m1, m2) for x in (True, False)),
                (first, True), (first, False), (second_node, True), (second_node, False),
            ]  # fmt: skip
            assert [p.metadata.name for p in await admin.pods_on(first) if p.metadata] == ["web-new"]
            assert await admin.pods_on(second_node) == []
            state = world.read()
            assert state["cluster"]["version"] == "1.31.0"
            assert all(state["machines"][s.host]["kubelet_version"] == "1.31.0" for s in machines.servers)

            # -- scale in: m2 leaves; its reset fails half-way, its etcd member is removed anyway --
            world.fault(f"reset-{m2.host}").parent.mkdir(exist_ok=True)
            world.fault(f"reset-{m2.host}").touch()
            cordons.clear()
            smaller = cluster_pb2.Cluster()
            smaller.metadata.name = "prod"
            smaller.spec.machines.add(ip=m0.host, ssh_port=m0.port, credential_ref="test-key")
            smaller.spec.machines.add(ip=m1.host, ssh_port=m1.port, credential_ref="test-key")
            mask = field_mask_pb2.FieldMask(paths=["spec.machines"])
            await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=smaller, update_mask=mask))
            c = await wait_for(lambda: phase_of(api, "prod", cluster_pb2.CLUSTER_PHASE_RUNNING), within=90)
            assert [m.machine.ip for m in c.status.control_plane] == [m0.host, m1.host]
            state = world.read()
            assert set(state["cluster"]["etcd"]) == {node_name(m0), node_name(m1)}
            # Drained, then its Node deleted through the API.
            assert cordons == [(node_name(m2), True)]
            assert await admin.node(node_name(m2)) is None
            assert any(
                c["argv"][1:2] == ["reset"] and not c["ok"] for c in world.calls("kubeadm") if c["machine"] == m2.host
            )
            haproxy = (world.root_of(m0.host) / "etc/haproxy/haproxy.cfg").read_text()
            assert f"{m2.host}:6443" not in haproxy

            # -- the last masters cannot all go --
            empty = cluster_pb2.Cluster()
            empty.metadata.name = "prod"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=empty, update_mask=mask))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "last control-plane" in str(err.value.details())

            # -- delete (the workload gone first: its budget would hold the drains back) --
            await admin.client.delete(Namespace, "shop")
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="prod"))

        async def gone() -> bool:
            try:
                await api.clusters.Get(cluster_pb2.GetClusterRequest(name="prod"))
            except grpc.aio.AioRpcError as e:
                return e.code() == grpc.StatusCode.NOT_FOUND
            return False

        await wait_for(gone, within=90)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await creds.Get(credential_pb2.GetClusterCredentialRequest(name="prod"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert pki.ca_cert_hash(stored.spec.ca.cert_pem.encode()).startswith("sha256:")


@pytest.fixture
def three(tmp_path: Path) -> Iterator[tuple[Machines, World]]:
    with kubeadm_machines(tmp_path, 3) as got:
        yield got


async def test_a_1_31_cluster_behind_an_operators_load_balancer_installs_with_kubeadm_v1beta4(
    api: Running, etcd_config: EtcdConfig, three: tuple[Machines, World]
) -> None:
    machines, world = three
    m0, m1, w1 = machines.servers
    spec = cluster("edge", "1.31.1", [m0, m1])
    spec.spec.control_plane_endpoint.host = "api.edge.example"
    spec.spec.network.mode = cluster_pb2.NETWORK_MODE_FIXED_IP  # the add-on with tke-ipamd
    await publish_credentials(etcd_config, "default/test-key")  # as the controller will, before it starts here
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=spec))
    await api.machines.Create(machine_pb2.CreateMachineRequest(machine=worker("w1", "edge", w1)))

    async with controller(api, etcd_config, machines, world, "api.edge.example:6443") as cluster_api:
        c = await wait_for(lambda: phase_of(api, "edge", cluster_pb2.CLUSTER_PHASE_RUNNING), within=120)
        w = await wait_for(lambda: machine_running(api, "w1"), within=120)

        # -- the network add-on: applied through the cluster's API once the control plane
        # answered, rolled out on every node, then applied again by a later plan, changing nothing --
        addons = find(c.status.conditions, "AddonsReady")
        assert addons is not None and addons.status == meta_pb2.CONDITION_STATUS_TRUE
        async with cluster_api.admin() as admin:
            first = await rollouts.applied(admin, network.render(c))
            assert set(first) == {
                "ServiceAccount/tke-cni", "ClusterRole/tke:cni", "ClusterRoleBinding/tke:cni", "ConfigMap/tke-cni",
                "DaemonSet/tke-cni", "ServiceAccount/tke-ipamd", "ClusterRole/tke:ipamd",
                "ClusterRoleBinding/tke:ipamd", "ConfigMap/tke-ipamd", "DaemonSet/tke-ipamd",
                "Deployment/tke-ipamd-watcher",
            }  # fmt: skip
            assert first["DaemonSet/tke-ipamd"][1] == first["Deployment/tke-ipamd-watcher"][1] == 1  # never changed
            rollout = await KubeClusterAPI(admin, 1.0).rollout("DaemonSet", "kube-system", "tke-cni")
            assert rollout is not None and rollout.done and rollout.desired == 3  # the masters and the worker
            change = cluster_pb2.Cluster()
            change.metadata.name, change.spec.display_name = "edge", "the edge"
            mask = field_mask_pb2.FieldMask(paths=["spec.display_name"])
            await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=change, update_mask=mask))

            async def applied_again() -> bool:
                got = await phase_of(api, "edge", cluster_pb2.CLUSTER_PHASE_RUNNING)
                done = find(got.status.conditions, "ScaleAddonsReady") if got is not None else None
                return done is not None and done.status == meta_pb2.CONDITION_STATUS_TRUE

            await wait_for(applied_again, within=120, what="the scale plan's AddonsReady")
            assert await rollouts.applied(admin, network.render(c)) == first  # no resource version, no generation moved
        # kube-scheduler on every master reads the extender's configuration, as kubeadm mounts it.
        configuration = world.read()["cluster"]["configuration"]["scheduler"]
        for s in (m0, m1):
            path = world.root_of(s.host) / "etc/kubernetes/tke-scheduler.yaml"
            doc = yaml.safe_load(path.read_text())
            assert kubeadm_reference.errors(doc) == []
            assert doc["extenders"][0]["urlPrefix"] == "http://127.0.0.1:9040" and not doc["extenders"][0]["ignorable"]
        scheduler_file = str(world.root_of(m0.host) / "etc/kubernetes/tke-scheduler.yaml")
        assert configuration["extraArgs"] == [{"name": "config", "value": scheduler_file}]
        assert configuration["extraVolumes"][0]["hostPath"] == scheduler_file

    # One init, then the other master and the worker join; every document kubeadm was given
    # is of kubeadm's v1beta4 API (the stand-in refuses any other for 1.31, and checks each
    # against the v1beta4 reference field lists).
    calls = [c for c in world.calls("kubeadm") if c["argv"][1] in ("init", "join")]
    assert [(c["machine"], c["argv"][1], c["ok"]) for c in calls] == [
        (m0.host, "init", True),
        (m1.host, "join", True),
        (w1.host, "join", True),
    ]
    assert calls[0]["documents"] == {
        "ClusterConfiguration": "kubeadm.k8s.io/v1beta4",
        "InitConfiguration": "kubeadm.k8s.io/v1beta4",
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
    }
    assert calls[1]["documents"] == calls[2]["documents"] == {"JoinConfiguration": "kubeadm.k8s.io/v1beta4"}
    state = world.read()
    assert state["cluster"]["endpoint"] == c.status.control_plane_endpoint == "api.edge.example:6443"
    assert set(state["cluster"]["etcd"]) == {node_name(m0), node_name(m1)}
    assert {n: v["control_plane"] for n, v in state["cluster"]["nodes"].items()} == {
        node_name(m0): True,
        node_name(m1): True,
        node_name(w1): False,
    }
    assert [(a.type, a.host, a.port) for a in c.status.addresses] == [
        ("Advertise", "api.edge.example", 6443),
        ("Internal", m0.host, 6443),
        ("Internal", m1.host, 6443),
    ]
    # Packages of 1.31 from its own repository; the operator's balancer, so no VIP pods.
    for s in (m0, m1, w1):
        assert state["machines"][s.host]["repository"] == "1.31"
        assert state["machines"][s.host]["packages"]["kubeadm"] == "1.31.1"
        assert not (world.root_of(s.host) / "etc/kubernetes/manifests/keepalived.yaml").exists()
    assert w.status.node_info.kubelet_version == "v1.31.1"
    assert ("InternalIP", w1.host) in [(a.type, a.address) for a in w.status.addresses]
