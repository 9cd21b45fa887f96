"""tke-ipamd following Kubernetes workloads: the workload watcher and the pod -> workload
resolution, against the Kubernetes API stand-in (real watches with resource versions and
bookmarks, 410 on a forgotten version, garbage collection of owned objects) and the IPAM core
over the session's etcd.

The test plays the cluster's controllers and kubelets through the API: it creates a workload's
pods with their ownerReferences, "runs" each pod's CNI ADD as tke-ipamc would (Allocate naming
only the pod, so that ipamd resolves its workload through the API), its DEL when the kubelet
tears the pod down, and deletes the pod objects as the workload's controller does. tke-ipamd
reaches the API with its own identity, bound only to the network add-on's ClusterRole: the RBAC
the add-on grants is what these tests run with.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from tests.support.cutover import Relay, relay
from tests.support.ipamd_daemon import IpamdProcess
from tests.support.kube import objects
from tests.support.kube.running import StandIn
from tests.support.waiting import wait_for
from tke.internal.ipamd.ipam import IPAM
from tke.internal.ipamd.kube_resolver import KubeResolver
from tke.internal.ipamd.kube_watcher import WorkloadWatcher
from tke.internal.ipamd.workloads import Workload
from tke.internal.provider.kube.access import from_kubeconfig
from tke.internal.provider.kube.api import ClusterAPI
from tke.internal.rpc.errors import ApiError
from tke.internal.storage.etcd import EtcdConfig
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from tke.plugins.ip_providers.static import StaticProvider
from tke.plugins.ip_storage.etcd import EtcdIPStorage, EtcdIPStorageConfig

from .conftest import Clock
from .kubernetes import NS, create, granted, ipamd_kubeconfig, kube_server

NODE = "node-1"
COOLDOWN = 30.0
IMMUTABLE = ipam_pb2.RELEASE_POLICY_IMMUTABLE


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[StandIn]:
    with kube_server(tmp_path) as standin:
        yield standin


@pytest.fixture
async def admin(kube: StandIn) -> AsyncIterator[ClusterAPI]:
    async with await granted(kube) as api:
        yield api


def ipamd_access(standin: StandIn, server: str = "") -> Any:
    access = from_kubeconfig(ipamd_kubeconfig(standin))
    return dataclasses.replace(access, server=server) if server else access


@pytest.fixture
async def storage(etcd_config: EtcdConfig) -> AsyncIterator[EtcdIPStorage]:
    s = EtcdIPStorage(EtcdIPStorageConfig(endpoints=list(etcd_config.endpoints), prefix=etcd_config.prefix))
    try:
        yield s
    finally:
        await s.close()


@dataclasses.dataclass
class Ipamd:
    """tke-ipamd's core as the daemon wires it: IPAM resolving pods through the API."""

    api: ClusterAPI
    ipam: IPAM
    clock: Clock


@contextlib.asynccontextmanager
async def ipamd(standin: StandIn, storage: EtcdIPStorage, server: str = "") -> AsyncIterator[Ipamd]:
    clock = Clock()
    async with ClusterAPI(ipamd_access(standin, server), timeout=5.0) as api:
        ipam = IPAM(storage, {"static": StaticProvider()}, cooldown=COOLDOWN, clock=clock, resolver=KubeResolver(api))
        yield Ipamd(api, ipam, clock)


@contextlib.asynccontextmanager
async def watching(d: Ipamd) -> AsyncIterator[WorkloadWatcher]:
    watcher = WorkloadWatcher(d.api, d.ipam, cursor_interval=0.0, backoff_base=0.05, backoff_cap=0.5)
    task = asyncio.create_task(watcher.run())
    try:
        await wait_for(lambda: watcher.synced.is_set() or task.done(), what="the watcher's start")
        assert not task.done(), task
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def setup_pools(ipam: IPAM, kind: str, name: str) -> None:
    await ipam.create_pool(ipam_pb2.Pool(name="fixed", cidr="10.90.0.0/24"))
    await ipam.put_binding(
        ipam_pb2.Binding(
            workload=ipam_pb2.WorkloadRef(namespace=NS, kind=kind, name=name), pool="fixed", release_policy=IMMUTABLE
        )
    )


# -- playing Kubernetes' controllers and kubelets ----------------------------------------------


def add(pod: str, container: str, ip: str = "") -> ipam_pb2.AllocateRequest:
    """tke-ipamc's Allocate for a pod named only by namespace and name, as kubelet sends it."""
    owner = ipam_pb2.Owner(namespace=NS, pod_name=pod)
    return ipam_pb2.AllocateRequest(owner=owner, container_id=container, ifname="eth0", node=NODE, ip=ip)


def stateful_set(name: str, replicas: int) -> dict[str, Any]:
    return objects.stateful_set(name, NS, replicas)


def deployment(name: str, replicas: int) -> dict[str, Any]:
    return objects.deployment(name, NS, replicas)


async def start_pod(d: Ipamd, admin: ClusterAPI, name: str, owner: dict[str, Any] | None) -> ipam_pb2.Allocation:
    """The controller creates the pod, the scheduler binds it, the kubelet runs its CNI ADD:
    tke-ipamc's Allocate names the pod only (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID)."""
    pod = await create(admin, objects.pod(name, NS, node=NODE, owner=owner))
    uid = pod["metadata"]["uid"]
    got = await d.ipam.allocate(
        ipam_pb2.AllocateRequest(
            owner=ipam_pb2.Owner(namespace=NS, pod_name=name, pod_uid=uid),
            container_id=f"c-{name}-{uid[:8]}",
            ifname="eth0",
            node=NODE,
            release_policy=ipam_pb2.RELEASE_POLICY_POD_DELETE,
        )
    )
    return got.allocation


async def stop_pod(d: Ipamd, admin: ClusterAPI, a: ipam_pb2.Allocation, *, cni_del: bool = True) -> None:
    """The kubelet tears the sandbox down (CNI DEL), then the pod object goes."""
    if cni_del:
        await d.ipam.release(a.container_id, a.ifname, a.owner.pod_uid)
    await admin.client.delete(Pod, a.owner.pod_name, namespace=NS)


async def held(d: Ipamd, a: ipam_pb2.Allocation) -> bool:
    try:
        got = await d.ipam.get_by_address(a.pool, a.ip)
    except ApiError as err:
        assert err.code == grpc.StatusCode.NOT_FOUND
        return False
    return got.owner.pod_name == a.owner.pod_name


def released(watcher: WorkloadWatcher) -> list[str]:
    return sorted(a.owner.pod_name for a, _ in watcher.released)


async def scale(admin: ClusterAPI, kind: Any, name: str, replicas: int) -> None:
    await admin.client.patch(kind, name, {"spec": {"replicas": replicas}}, namespace=NS, patch_type=PatchType.MERGE)


# -- the tests -----------------------------------------------------------------------------------


async def test_pods_resolve_to_their_controllers_through_the_api(kube: StandIn, admin: ClusterAPI,
                                                                   storage: EtcdIPStorage) -> None:  # fmt: skip
    async with ipamd(kube, storage) as d:
        resolver = d.ipam.resolver
        sts = await create(admin, stateful_set("db", 1))
        dep = await create(admin, deployment("web", 1))
        rs = await create(admin, objects.replica_set("web-5d8f7c6b9", NS, 1, owner=dep))
        bare_rs = await create(admin, objects.replica_set("cache", NS, 1))
        await create(admin, objects.pod("db-0", NS, owner=sts))
        await create(admin, objects.pod("web-5d8f7c6b9-x2x9z", NS, owner=rs))
        await create(admin, objects.pod("cache-abcde", NS, owner=bare_rs))
        await create(admin, objects.pod("lonely", NS))
        assert await resolver.workload_of(NS, "db-0") == Workload(NS, "StatefulSet", "db")
        assert await resolver.workload_of(NS, "web-5d8f7c6b9-x2x9z") == Workload(NS, "Deployment", "web")
        assert await resolver.workload_of(NS, "cache-abcde") == Workload(NS, "ReplicaSet", "cache")
        assert await resolver.workload_of(NS, "lonely") == Workload(NS, "Pod", "lonely")
        assert await resolver.workload_of(NS, "nobody") is None
        # Named "db-1" but a bare pod: the name says nothing.
        await create(admin, objects.pod("db-1", NS))
        assert (await d.ipam.resolve(NS, "db-1")).kind == "Pod"
        assert (await d.ipam.resolve(NS, "nobody")) == Workload(NS, "Pod", "nobody")


async def test_an_unreachable_api_makes_allocate_wait_instead_of_guessing(kube: StandIn, admin: ClusterAPI,
                                                                          storage: EtcdIPStorage) -> None:  # fmt: skip
    async with relay("127.0.0.1", int(kube.url.rsplit(":", 1)[1])) as cut_off, ipamd(kube, storage, cut_off.url) as d:
        await setup_pools(d.ipam, "StatefulSet", "db")
        sts = await create(admin, stateful_set("db", 1))
        await create(admin, objects.pod("db-0", NS, owner=sts))
        await cut_off.cut()
        with pytest.raises(ApiError) as err:
            await d.ipam.allocate(add("db-0", "c1"))
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert "cannot resolve the workload of pod shop/db-0" in err.value.message
        await cut_off.restore()
        got = await d.ipam.allocate(add("db-0", "c1"))
        assert (got.allocation.owner.workload_kind, got.allocation.release_policy) == ("StatefulSet", IMMUTABLE)


async def test_a_deleted_stateful_set_frees_its_retained_addresses_after_the_cooldown(
    kube: StandIn, admin: ClusterAPI, storage: EtcdIPStorage
) -> None:
    async with ipamd(kube, storage) as d, watching(d) as watcher:
        await setup_pools(d.ipam, "StatefulSet", "db")
        sts = await create(admin, stateful_set("db", 3))
        pods = [await start_pod(d, admin, f"db-{i}", sts) for i in range(3)]
        assert {(a.owner.workload_kind, a.owner.workload_name, a.release_policy) for a in pods} == {
            ("StatefulSet", "db", IMMUTABLE)
        }
        # db-2's kubelet tore it down (its address is retained for it), then the StatefulSet is
        # deleted: the garbage collector deletes its pods.
        await d.ipam.release(pods[2].container_id, "eth0", pods[2].owner.pod_uid)
        await admin.client.delete(StatefulSet, "db", namespace=NS)
        await wait_for(lambda: len(watcher.released) == 3, what="three releases")
        assert released(watcher) == ["db-0", "db-1", "db-2"]
        assert all("StatefulSet shop/db was deleted" in why for _, why in watcher.released)
        status = (await d.ipam.get_pool("fixed")).status
        assert (status.allocated, status.cooling) == (0, 3)
        # Cooling down: nobody gets those addresses yet; after the cooldown, they are free.
        for a in pods:
            with pytest.raises(ApiError, match="released recently"):
                await d.ipam.allocate(add("x", "cx", ip=a.ip))
        d.clock.advance(COOLDOWN + 1)
        taken = await d.ipam.allocate(add("x", "cx", ip=pods[0].ip))
        assert taken.allocation.ip == pods[0].ip


async def test_a_stateful_set_scaled_from_3_to_1_frees_ordinals_1_and_2_only(
    kube: StandIn, admin: ClusterAPI, storage: EtcdIPStorage
) -> None:
    async with ipamd(kube, storage) as d, watching(d) as watcher:
        await setup_pools(d.ipam, "StatefulSet", "db")
        sts = await create(admin, stateful_set("db", 3))
        pods = [await start_pod(d, admin, f"db-{i}", sts) for i in range(3)]
        # db-0 restarts meanwhile (DEL, then ADD of a new container): it keeps its address.
        await d.ipam.release(pods[0].container_id, "eth0", pods[0].owner.pod_uid)
        await scale(admin, StatefulSet, "db", 1)
        seen = watcher.stats["events"]
        await wait_for(lambda: watcher.stats["events"] > seen, what="the scale-down seen")
        # The pods still exist: nothing goes before the StatefulSet controller deletes them.
        assert all([await held(d, a) for a in pods]) and not watcher.released
        for a in (pods[2], pods[1]):  # the controller deletes the highest ordinal first
            await stop_pod(d, admin, a)
        await wait_for(lambda: len(watcher.released) == 2, what="two releases")
        assert released(watcher) == ["db-1", "db-2"]
        assert all("scaled down to 1" in why for _, why in watcher.released)
        assert await held(d, pods[0]) and not await held(d, pods[1]) and not await held(d, pods[2])
        again = await d.ipam.allocate(ipam_pb2.AllocateRequest(owner=pods[0].owner, container_id="c-db-0-again",
                                                               ifname="eth0", node=NODE))  # fmt: skip
        assert again.reused and again.allocation.ip == pods[0].ip


async def test_a_deployments_pods_through_its_replica_set_are_released_with_it(
    kube: StandIn, admin: ClusterAPI, storage: EtcdIPStorage
) -> None:
    async with ipamd(kube, storage) as d, watching(d) as watcher:
        await setup_pools(d.ipam, "Deployment", "web")
        dep = await create(admin, deployment("web", 2))
        rs = await create(admin, objects.replica_set("web-5d8f7c6b9", NS, 2, owner=dep))
        a, b = [await start_pod(d, admin, f"web-5d8f7c6b9-{s}", rs) for s in ("x2x9z", "q7w8e")]
        assert (a.owner.workload_kind, a.owner.workload_name, a.release_policy) == ("Deployment", "web", IMMUTABLE)
        # A pod without a binding and the pod-delete policy, whose DEL never comes (its node
        # died, the pod was force-deleted): the watcher is the backstop.
        lonely = await start_pod(d, admin, "lonely", None)
        assert lonely.release_policy == ipam_pb2.RELEASE_POLICY_POD_DELETE
        await stop_pod(d, admin, lonely, cni_del=False)
        await wait_for(lambda: released(watcher) == ["lonely"], what="the gone pod's release")
        # Scaled to 1: the ReplicaSet's controller deletes one pod; the Deployment keeps one
        # address, the one in use.
        await scale(admin, Deployment, "web", 1)
        await stop_pod(d, admin, b)
        await wait_for(lambda: len(watcher.released) == 2, what="the scale-down's release")
        assert released(watcher) == ["lonely", b.owner.pod_name] and await held(d, a)
        # Deleted: the garbage collector deletes the ReplicaSet, then its pod.
        await admin.client.delete(Deployment, "web", namespace=NS)
        await wait_for(lambda: len(watcher.released) == 3, what="the deletion's release")
        assert not await held(d, a)
        assert "Deployment shop/web was deleted" in watcher.released[-1][1]


async def test_the_watcher_resumes_after_a_restart_without_releasing_live_pods(
    kube: StandIn, admin: ClusterAPI, storage: EtcdIPStorage
) -> None:
    async with ipamd(kube, storage) as d:
        await setup_pools(d.ipam, "StatefulSet", "db")
        sts = await create(admin, stateful_set("db", 4))
        pods = [await start_pod(d, admin, f"db-{i}", sts) for i in range(4)]
        async with watching(d) as first:
            assert first.stats["resyncs"] == 1  # a first start lists and examines everything
            await scale(admin, StatefulSet, "db", 3)
            await stop_pod(d, admin, pods[3])
            await wait_for(lambda: released(first) == ["db-3"], what="db-3's release")

            async def saved() -> bool:
                return all([await storage.watch_cursor(w) == v for w, v in first.cursors.items()])

            await wait_for(saved, what="the cursors saved")
        # While no watcher runs: scaled to 1; db-2 is gone, db-1 still being stopped (alive).
        await scale(admin, StatefulSet, "db", 1)
        await stop_pod(d, admin, pods[2])
        async with watching(d) as second:
            # It watched from the saved versions (no new list-and-resync), and the missed
            # events came: db-2's address goes, db-0's and db-1's pods live, and stay.
            await wait_for(lambda: released(second) == ["db-2"], what="db-2's release after the restart")
            assert second.stats["resyncs"] == 0
            assert await held(d, pods[0]) and await held(d, pods[1])
            await stop_pod(d, admin, pods[1])
            await wait_for(lambda: released(second) == ["db-1", "db-2"], what="db-1's release")
            assert await held(d, pods[0])


async def test_a_forgotten_resource_version_means_a_new_list_and_a_resync(
    tmp_path: Path, storage: EtcdIPStorage
) -> None:
    with kube_server(tmp_path, history=20) as standin:
        async with await granted(standin) as admin, ipamd(standin, storage) as d:
            await setup_pools(d.ipam, "StatefulSet", "db")
            sts = await create(admin, stateful_set("db", 2))
            pods = [await start_pod(d, admin, f"db-{i}", sts) for i in range(2)]
            async with watching(d):
                pass
            await scale(admin, StatefulSet, "db", 1)
            await stop_pod(d, admin, pods[1])
            for i in range(30):  # more changes than the server keeps
                await create(
                    admin, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"n{i}", "namespace": NS}}
                )
            async with watching(d) as watcher:
                await wait_for(lambda: released(watcher) == ["db-1"], what="db-1's release")
                assert watcher.stats["resyncs"] >= 1 and await held(d, pods[0])


async def test_a_briefly_unreachable_api_costs_retries_not_addresses(
    kube: StandIn, admin: ClusterAPI, storage: EtcdIPStorage
) -> None:
    cut_off: Relay
    async with relay("127.0.0.1", int(kube.url.rsplit(":", 1)[1])) as cut_off, ipamd(kube, storage, cut_off.url) as d:
        await setup_pools(d.ipam, "StatefulSet", "db")
        sts = await create(admin, stateful_set("db", 3))
        pods = [await start_pod(d, admin, f"db-{i}", sts) for i in range(3)]
        async with watching(d) as watcher:
            await cut_off.cut()
            # Meanwhile the StatefulSet shrinks to 2, and db-2 goes.
            await scale(admin, StatefulSet, "db", 2)
            await stop_pod(d, admin, pods[2])
            await wait_for(lambda: watcher.stats["retries"] >= 2, what="failed attempts")
            assert not watcher.released
            await cut_off.restore()
            await wait_for(lambda: released(watcher) == ["db-2"], what="db-2's release after the outage")
            assert await held(d, pods[0]) and await held(d, pods[1])


async def test_tke_ipamd_runs_the_watcher_when_configured(
    kube: StandIn, admin: ClusterAPI, etcd_config: EtcdConfig
) -> None:
    """The daemon as the add-on's tke-ipamd-watcher runs it, here with its unix socket too."""
    workdir = Path(tempfile.mkdtemp(prefix="ipamd-w-", dir="/tmp"))
    (workdir / "kubeconfig").write_text(ipamd_kubeconfig(kube))
    daemon = IpamdProcess(
        workdir,
        endpoints=list(etcd_config.endpoints),
        prefix=etcd_config.prefix,
        cooldown=COOLDOWN,
        log_level="info",
        extra=f'[kubernetes]\nkubeconfig = "{workdir / "kubeconfig"}"\nwatch_workloads = true\ncursor_interval = 0.1\n',
    )
    try:
        daemon.start()
        async with grpc.aio.insecure_channel(daemon.target) as channel:
            stub = ipam_pb2_grpc.IPAMServiceStub(channel)
            await stub.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name="fixed", cidr="10.90.0.0/24")))
            binding = ipam_pb2.Binding(workload=ipam_pb2.WorkloadRef(namespace=NS, kind="StatefulSet", name="db"),
                                       pool="fixed", release_policy=IMMUTABLE)  # fmt: skip
            await stub.PutBinding(ipam_pb2.PutBindingRequest(binding=binding))
            sts = await create(admin, stateful_set("db", 1))
            await create(admin, objects.pod("db-0", NS, node=NODE, owner=sts))
            got = await stub.Allocate(add("db-0", "c1"))
            assert (got.allocation.owner.workload_kind, got.allocation.release_policy) == ("StatefulSet", IMMUTABLE)
            await admin.client.delete(StatefulSet, "db", namespace=NS)

            async def freed() -> bool:
                try:
                    await stub.GetAllocation(ipam_pb2.GetAllocationRequest(address=f"fixed/{got.allocation.ip}"))
                except grpc.aio.AioRpcError as err:
                    return err.code() == grpc.StatusCode.NOT_FOUND
                return False

            await wait_for(freed, what="the deleted StatefulSet's address released by the daemon's watcher")
        daemon.stop()
        log = daemon.log_path.read_text()
        assert "workload watcher" in log and "released fixed/" in log and "Traceback" not in log
    finally:
        daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def test_a_missing_permission_is_logged_and_retried_until_granted(
    kube: StandIn, admin: ClusterAPI, storage: EtcdIPStorage
) -> None:
    clock = Clock()
    stranger = from_kubeconfig(kube.kubeconfig(user="someone-else"))
    async with ClusterAPI(stranger, timeout=5.0) as api:
        ipam = IPAM(storage, {"static": StaticProvider()}, cooldown=COOLDOWN, clock=clock, resolver=KubeResolver(api))
        watcher = WorkloadWatcher(api, ipam, cursor_interval=0.0, backoff_base=0.05, backoff_cap=0.2)
        task = asyncio.create_task(watcher.run())
        try:
            await wait_for(lambda: watcher.stats["retries"] >= 2, what="refused lists, retried")
            assert not task.done() and not watcher.synced.is_set()
            grant = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "someone-else-ipamd"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tke:ipamd"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "someone-else"}],
            }
            await admin.apply([grant])
            await wait_for(watcher.synced.is_set, what="the watcher started once granted")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
