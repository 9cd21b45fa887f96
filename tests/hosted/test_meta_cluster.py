"""The hosted provider against a meta cluster: the Kubernetes API stand-in (it validates every
object against Kubernetes' schemas, as the real server would with strict field validation),
with the meta cluster's controllers played by the test (tests/support/hosted.py): load
balancer addresses, ready replicas, and the hosted kube-apiserver itself, a second stand-in
serving with the certificates of the Secrets the provider wrote."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.resources.core_v1 import ConfigMap, Namespace, Secret, Service
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.types import PatchType

from tests.hosted.test_render import over_the_meta_clusters_bound
from tests.support.hosted import META_NETWORKS, MetaControllers, meta_cluster, meta_controllers
from tests.support.installed import masters
from tests.support.kube.running import StandIn
from tests.support.ports import free_port
from tests.support.provider_steps import MemoryCredentialStore, run_steps
from tke.internal.provider import cluster_credentials
from tke.internal.provider.clusterapi import KubeClusterAPIs, admin_access
from tke.internal.provider.contract import ClusterContext, Tools
from tke.internal.provider.credentials import ConfiguredCredentials
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.kube import pki
from tke.internal.provider.kube.api import ClusterAPI
from tke.platform.v1 import cluster_pb2
from tke.plugins.cluster_providers.hosted import HostedClusterProvider
from tke.plugins.hosted import control_plane, naming

pytestmark = pytest.mark.timeout(180)


class NoDialer:
    def connect(self, target: Any) -> Any:
        raise AssertionError(f"the hosted provider tried to log in to {target}")


def cluster(version: str = "1.31.2") -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster()
    c.metadata.name, c.metadata.uid, c.metadata.tenant_id = "prod", str(uuid.uuid4()), "team-a"
    c.spec.type, c.spec.version = "hosted", version
    c.spec.network.pod_cidr, c.spec.network.service_cidr = "10.244.0.0/16", "10.96.0.0/12"
    return c


def context(c: cluster_pb2.Cluster, store: MemoryCredentialStore | None = None) -> ClusterContext:
    tools = Tools(
        dialer=NoDialer(),
        credentials=ConfiguredCredentials({}).for_tenant(c.metadata.tenant_id),
        cluster_credentials=store or MemoryCredentialStore(),
        cluster_apis=KubeClusterAPIs(),
    )
    return ClusterContext(obj=c, machines=[], tools=tools)


@contextlib.asynccontextmanager
async def world(tmp_path: Path, meta_version: str = "1.31.0") -> AsyncIterator[tuple[StandIn, Path, MetaControllers]]:
    with meta_cluster(tmp_path, meta_version) as (meta, kubeconfig):
        async with meta_controllers(meta, tmp_path / "controllers") as controllers:
            yield meta, kubeconfig, controllers


async def versions(api: ClusterAPI, namespace: str) -> dict[str, str]:
    """Every object of the namespace -> its resourceVersion."""
    out: dict[str, str] = {}
    for kind in (Service, Secret, StatefulSet, Deployment, NetworkPolicy):
        items: list[Any] = (await api.list_objects(kind, namespace=namespace))[0]
        out |= {f"{kind.__name__}/{o.metadata.name}": o.metadata.resourceVersion for o in items}
    return out


def memory_limit(workload: Any) -> str:
    """The memory limit of a workload's one container, as the meta cluster stored it."""
    return str(workload.spec.template.spec.containers[0].resources.limits["memory"])


async def test_a_control_plane_comes_up_in_its_namespace_and_serves_with_the_pki_it_was_given(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with world(tmp_path) as (meta, kubeconfig, controllers):
        provider = HostedClusterProvider(kubeconfig_file=str(kubeconfig), **META_NETWORKS, port=port)
        ctx = context(cluster())
        await run_steps(provider.create_steps, ctx, within=60)
        status = ctx.obj.status
        assert status.control_plane_endpoint == f"127.0.0.1:{port}"
        assert status.version == "1.31.2"
        assert [(a.type, a.host, a.port) for a in status.addresses] == [("Advertise", "127.0.0.1", port)]
        namespace = naming.namespace(ctx.cluster)
        async with masters(meta) as api:
            ns: Any = await api.get(Namespace, namespace)
            assert ns is not None and ns.metadata.labels[naming.CLUSTER_UID] == ctx.cluster.metadata.uid
            etcd = await api.get(StatefulSet, "etcd", namespace)
            assert etcd is not None and etcd.spec.replicas == 3
            # Each container is bounded in the shared meta cluster: a memory limit, as stored.
            assert memory_limit(etcd) == "4Gi"
            for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
                d = await api.get(Deployment, name, namespace)
                assert d is not None and d.spec.replicas == 2
                assert memory_limit(d) in ("2Gi", "512Mi", "256Mi")
            before = await versions(api, namespace)
            assert len([k for k in before if k.startswith("Secret/")]) == 4
            # Every step again (a restarted controller): nothing changes in the meta cluster.
            await run_steps(provider.create_steps, ctx, within=60)
            assert await versions(api, namespace) == before

        # The hosted API server is the one the meta controllers started from the Secrets: the
        # platform reaches it through the endpoint, checks it against the cluster CA, and its
        # admin group is bound to cluster-admin by what the provider applied.
        cas = await cluster_credentials.read_cas(ctx.tools.cluster_credentials, ctx.cluster)
        access = admin_access(f"https://127.0.0.1:{port}", cas.ca, "1.31.2")
        async with ClusterAPI(access) as hosted:
            assert await hosted.version() == "1.31.2"
            info: Any = await hosted.get(ConfigMap, "cluster-info", "kube-public")
            assert info is not None and f"https://127.0.0.1:{port}" in info.data["kubeconfig"]
            config: Any = await hosted.get(ConfigMap, "kubeadm-config", "kube-system")
            assert (
                config is not None and f"controlPlaneEndpoint: 127.0.0.1:{port}" in config.data["ClusterConfiguration"]
            )
        assert "ready (1.31.2)" in await provider.check_health(ctx)

        # A client certificate of another CA is refused: the hosted API trusts the cluster CA only.
        stranger = admin_access(f"https://127.0.0.1:{port}", pki.ClusterCAs.generate().ca, "1.31.2")
        async with ClusterAPI(stranger) as hosted:
            with pytest.raises(PermanentError):
                await hosted.version()

        await run_steps(provider.delete_steps, ctx, within=60)
        async with masters(meta) as api:
            assert await api.get(Namespace, namespace) is None
        assert await ctx.tools.cluster_credentials.get("team-a", "prod") is None
        assert controllers.hosted  # the hosted API server did run


async def test_delete_waits_for_the_namespace_to_be_gone(tmp_path: Path) -> None:
    async with world(tmp_path) as (meta, kubeconfig, _):
        provider = HostedClusterProvider(kubeconfig_file=str(kubeconfig), **META_NETWORKS, port=free_port())
        ctx = context(cluster())
        await run_steps(provider.create_steps[:3], ctx, within=60)  # credential, endpoint, certificates
        namespace = naming.namespace(ctx.cluster)
        async with masters(meta) as api:
            # Something in the namespace holds on (a finalizer of another controller).
            await api.client.patch(Secret, "etcd-pki", {"metadata": {"finalizers": ["example.com/hold"]}},
                                   namespace=namespace, patch_type=PatchType.MERGE)  # fmt: skip
            with pytest.raises(TemporaryError, match="still being deleted"):
                await provider.delete_namespace(ctx)
            assert await api.get(Namespace, namespace) is not None
            with pytest.raises(TemporaryError, match="still being deleted"):
                await provider.delete_namespace(ctx)
            await api.client.patch(Secret, "etcd-pki", {"metadata": {"finalizers": None}}, namespace=namespace,
                                   patch_type=PatchType.MERGE)  # fmt: skip
            await run_steps(provider.delete_steps, ctx, within=30)
            assert await api.get(Namespace, namespace) is None


async def test_a_namespace_of_an_earlier_cluster_of_that_name_is_replaced(tmp_path: Path) -> None:
    async with world(tmp_path) as (meta, kubeconfig, _):
        provider = HostedClusterProvider(kubeconfig_file=str(kubeconfig), **META_NETWORKS, port=free_port())
        old = context(cluster())
        await run_steps(provider.create_steps[:3], old, within=60)
        new_cluster = cluster()
        new = context(new_cluster)
        await run_steps(provider.create_steps[:2], new, within=60)
        async with masters(meta) as api:
            ns: Any = await api.get(Namespace, naming.namespace(new_cluster))
            assert ns is not None and ns.metadata.labels[naming.CLUSTER_UID] == new_cluster.metadata.uid
            assert await api.get(Secret, "etcd-pki", naming.namespace(new_cluster)) is None


async def test_without_a_meta_cluster_the_step_says_which_option_to_set(tmp_path: Path) -> None:
    ctx = context(cluster())
    with pytest.raises(PermanentError, match="set kubeconfig_file"):
        await HostedClusterProvider().ensure_endpoint(ctx)
    with pytest.raises(PermanentError, match="No such file"):
        await HostedClusterProvider(kubeconfig_file=str(tmp_path / "missing"), **META_NETWORKS).ensure_endpoint(ctx)


async def test_a_namespace_of_another_tenants_cluster_is_never_deleted_by_a_name_collision(tmp_path: Path) -> None:
    """Namespace names are "<prefix>-<tenant>-<cluster>-<hash>": tenant "team" with cluster
    "a-..." reads like tenant "team-a" with cluster "...", and with long names the readable part
    is cut, so only the 10 hex digits (40 bits) of the hash tell two clusters apart: a tenant that
    grinds names until its cluster's namespace is another tenant's gets that namespace. Its
    steps must neither take it over nor delete it (it holds the other control plane's etcd)."""
    victim = cluster()
    victim.metadata.tenant_id, victim.metadata.name = "team-a", "n" * 63
    attacker = cluster()
    attacker.metadata.tenant_id, attacker.metadata.name = "team", "a-" + "n" * 41 + "x" * 20
    same = naming.namespace(victim)
    # The readable parts are the same: only the hash separates them.
    assert naming.namespace(attacker)[:-10] == same[:-10]
    async with world(tmp_path) as (meta, kubeconfig, _):
        provider = HostedClusterProvider(kubeconfig_file=str(kubeconfig), **META_NETWORKS, port=free_port())
        await run_steps(provider.create_steps[:3], context(victim), within=60)
        # The attacker found a name whose hash is the victim's (40 bits).
        hosted_module = "tke.plugins.cluster_providers.hosted.naming.namespace"
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(hosted_module, lambda c, prefix="tke": same)
            ctx = context(attacker)
            with pytest.raises(PermanentError, match="belongs to another cluster"):
                await provider.ensure_endpoint(ctx)
            await provider.delete_namespace(ctx)
        async with masters(meta) as api:
            ns: Any = await api.get(Namespace, same)
            assert ns is not None and ns.metadata.deletionTimestamp is None
            assert ns.metadata.labels[naming.CLUSTER_UID] == victim.metadata.uid
            assert await api.get(Secret, "etcd-pki", same) is not None


async def test_a_cluster_stored_before_the_bound_on_extra_args_renders_nothing_in_the_meta_cluster(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as (meta, kubeconfig, _):
        provider = HostedClusterProvider(kubeconfig_file=str(kubeconfig), **META_NETWORKS, port=free_port())
        ctx = context(cluster())
        await run_steps(provider.create_steps[:3], ctx, within=60)
        over_the_meta_clusters_bound(ctx.obj)
        with pytest.raises(PermanentError, match=r"cluster\.spec\.extra_args: the control plane's extra args take"):
            await provider.ensure_control_plane(ctx)
        async with masters(meta) as api:
            assert await api.get(StatefulSet, "etcd", naming.namespace(ctx.cluster)) is None


async def test_a_running_control_plane_is_brought_up_to_date_when_the_platform_renders_it_differently(
    tmp_path: Path,
) -> None:
    """Each create step runs once: a changed option (`resources`) or a platform that renders the
    objects differently (a fix in a Deployment) must still reach a control plane made before,
    through the health check's `converge`, and only when what would be rendered changed."""
    options: dict[str, Any] = {**META_NETWORKS, "port": free_port()}
    async with world(tmp_path) as (meta, kubeconfig, _):
        provider = HostedClusterProvider(kubeconfig_file=str(kubeconfig), **options)
        ctx = context(cluster())
        await run_steps(provider.create_steps, ctx, within=60)
        namespace = naming.namespace(ctx.cluster)
        wait_ready = next(s for s in provider.create_steps if s.name == "WaitControlPlaneReady")
        async with masters(meta) as api:
            before = await versions(api, namespace)
            ns: Any = await api.get(Namespace, namespace)
            ns_version = ns.metadata.resourceVersion
            # Nothing changed: nothing is written, not even the namespace.
            assert await provider.converge(ctx) is None
            assert await versions(api, namespace) == before
            ns = await api.get(Namespace, namespace)
            assert ns.metadata.resourceVersion == ns_version

            # The operator raises kube-apiserver's memory limit (the controller restarts with it).
            raised = HostedClusterProvider(
                kubeconfig_file=str(kubeconfig), resources={"kube-apiserver": {"limits": {"memory": "4Gi"}}}, **options
            )
            done = await raised.converge(ctx)
            assert done is not None and "applied again" in done
            d: Any = await api.get(Deployment, "kube-apiserver", namespace)
            assert memory_limit(d) == "4Gi"
            # The meta cluster's controllers roll it (they write its status, not the platform).
            await run_steps([wait_ready], ctx, within=60)
            after = await versions(api, namespace)
            assert after["Deployment/kube-apiserver"] != before["Deployment/kube-apiserver"]
            # Only what renders differently is written (server-side apply).
            assert after["Deployment/kube-scheduler"] == before["Deployment/kube-scheduler"]
            assert after["StatefulSet/etcd"] == before["StatefulSet/etcd"]
            assert await raised.converge(ctx) is None
            assert await versions(api, namespace) == after

            # A newer platform renders the scheduler differently.
            scheduler = control_plane.scheduler

            def fixed(plan: Any, checksum: str) -> list[dict[str, Any]]:
                objects: list[dict[str, Any]] = scheduler(plan, checksum)
                for o in objects:
                    if o["kind"] == "Deployment":
                        o["spec"]["template"]["metadata"].setdefault("annotations", {})["example.com/fix"] = "1"
                return objects

            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(control_plane, "scheduler", fixed)
                assert await raised.converge(ctx) is not None
                s: Any = await api.get(Deployment, "kube-scheduler", namespace)
                assert s.spec.template.metadata.annotations["example.com/fix"] == "1"
                await run_steps([wait_ready], ctx, within=60)
                latest = await versions(api, namespace)
                assert await raised.converge(ctx) is None
                assert await versions(api, namespace) == latest

                # A namespace that is not this cluster's (another uid) is never written.
                other = context(cluster())
                other.obj.metadata.name = ctx.obj.metadata.name
                other.obj.status.control_plane_endpoint = ctx.obj.status.control_plane_endpoint
                mp.setattr(control_plane, "scheduler", scheduler)
                with pytest.raises(PermanentError, match="not this cluster's"):
                    await raised.converge(other)
                assert await versions(api, namespace) == latest
